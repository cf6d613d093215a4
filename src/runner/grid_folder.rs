//! A grid folder is recognised by its own marker before collapse-lab writes or cleans anything
//! in it: `grid.toml` beginning with [`GRID_HEADER`]. `run --out DIR` on a grid whose folder
//! `DIR/<name>` already exists but is not one of ours (a user's folder that merely shares the
//! grid's name) is refused with exit 2: the lock holder's clean-up of leftover temporary files
//! and the staging clean-up must never touch files collapse-lab did not create.

use std::path::{Path, PathBuf};

use crate::config::{Grid, InputError};
use crate::log::{create_dir_in_given, refuse_symlink, write_text};

use super::GRID_FILE;

/// The first line of every `grid.toml` collapse-lab writes: the grid folder's marker.
pub const GRID_HEADER: &str =
    "# collapse-lab grid folder: the resolved grid as run (written by collapse-lab; do not edit)";

/// Whether `dir` holds a grid file collapse-lab wrote: one starting with [`GRID_HEADER`], or
/// one from before the header (a grid file that reads as a grid named `name`).
pub fn is_grid_folder(dir: &Path, name: &str) -> bool {
    let path = dir.join(GRID_FILE);
    if refuse_symlink(&path).is_err() {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(&path) else {
        return false;
    };
    text.lines().next() == Some(GRID_HEADER)
        || Grid::parse(&text, &path.display().to_string()).is_ok_and(|g| g.name == name)
}

/// The folder of `grid` below `out`, created or recognised as ours, with its marker written:
/// a new or empty folder is claimed, a grid folder of ours is reused, anything else is refused.
pub fn claim(out: &Path, grid: &Grid) -> anyhow::Result<PathBuf> {
    let dir = out.join(&grid.name);
    refuse_symlink(&dir)?;
    let empty = std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none());
    if !empty && !is_grid_folder(&dir, &grid.name) {
        return Err(InputError::new(
            dir.display().to_string(),
            format!(
                "exists and is not a collapse-lab grid folder (no {GRID_FILE} written by collapse-lab in it): collapse-lab writes and cleans only folders it created; choose another --out or grid name"
            ),
        )
        .into());
    }
    let dir = create_dir_in_given(out, &grid.name)?;
    Ok(dir)
}

/// Writes the grid's marker and resolved grid, `grid.toml` (once the folder is locked).
pub fn write_grid_file(dir: &Path, grid: &Grid) -> anyhow::Result<()> {
    write_text(
        &dir.join(GRID_FILE),
        &format!("{GRID_HEADER}\n{}", grid.to_toml()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(name: &str) -> Grid {
        Grid::parse(
            &format!("name = \"{name}\"\nseeds = [0]\n[[variant]]\nname = \"byol\"\n"),
            "test",
        )
        .expect("grid")
    }

    #[test]
    fn a_folder_that_is_not_ours_is_refused_and_left_alone() -> anyhow::Result<()> {
        let out = tempfile::tempdir()?;
        let g = grid("g");
        // New, then ours.
        let dir = claim(out.path(), &g)?;
        write_grid_file(&dir, &g)?;
        assert!(is_grid_folder(&dir, "g"));
        claim(out.path(), &g)?;
        // Someone else's folder of the same name.
        let other = grid("docs");
        let theirs = out.path().join("docs");
        std::fs::create_dir_all(theirs.join("sub"))?;
        std::fs::write(theirs.join("sub/.notes.tmp-42"), "mine")?;
        let e = claim(out.path(), &other).expect_err("not ours");
        assert!(
            e.to_string().contains("not a collapse-lab grid folder"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(theirs.join("sub/.notes.tmp-42"))?,
            "mine"
        );
        // A grid.toml of another grid does not make it ours either.
        std::fs::write(theirs.join(GRID_FILE), g.to_toml())?;
        assert!(claim(out.path(), &other).is_err());
        // An empty folder is claimed.
        std::fs::create_dir(out.path().join("empty"))?;
        claim(out.path(), &grid("empty"))?;
        Ok(())
    }
}
