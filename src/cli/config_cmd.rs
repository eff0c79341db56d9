//! `config`: print the effective configuration with the source of every key.

use crate::config::{Loaded, render};

/// Prints the table; secrets are masked by `render`.
pub fn run(loaded: &Loaded) -> anyhow::Result<()> {
    super::out(&render(loaded));
    Ok(())
}
