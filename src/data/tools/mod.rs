//! The `data` commands' tools, apart from the formats and the pipeline they use.

pub(crate) mod contact_sheet;
pub mod fetch;
pub(crate) mod inspect;
