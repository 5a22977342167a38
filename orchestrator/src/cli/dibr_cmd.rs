//! `ferry dibr`: the DIBR guide of a saved plan, as Markdown and a self-contained HTML page.

use std::path::Path;

use super::{CliError, Ctx};
use crate::exit;

pub fn dibr(
    ctx: &Ctx,
    inventory: &Path,
    plan_path: &Path,
    out: &Path,
    pdf: bool,
) -> Result<u8, CliError> {
    let written = crate::engine::dibr::write(&ctx.state(), inventory, plan_path, out, pdf)?;
    ctx.out().dibr(&written);
    Ok(exit::OK)
}
