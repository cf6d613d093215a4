//! The `data` commands' tools, apart from the formats and the pipeline they use.

pub mod contact_sheet;
pub mod fetch;
pub mod inspect;
