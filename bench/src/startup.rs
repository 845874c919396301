//! (being written)

use crate::{Context, Outcome};

pub async fn run(_context: &Context) -> anyhow::Result<Outcome> {
    anyhow::bail!("not measured yet")
}
