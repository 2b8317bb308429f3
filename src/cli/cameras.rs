//! `bvae cameras`: list the cameras `--source camera:INDEX` can open.

use anyhow::Result;
use serde_json::json;

use crate::source::list_cameras;

/// Arguments of `bvae cameras`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array ([{index, name, description}]) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `bvae cameras`.
pub fn run(args: Args) -> Result<()> {
    let cams = list_cameras()?;
    if args.json {
        let list: Vec<_> = cams
            .iter()
            .map(|c| json!({"index": c.index, "name": c.name, "description": c.description}))
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    if cams.is_empty() {
        println!(
            "no camera found: no V4L2 device (/dev/video*) is present or readable; \
             check the cable, and that this user is in the `video` group"
        );
        return Ok(());
    }
    for c in &cams {
        println!("camera:{}  {}  ({})", c.index, c.name, c.description);
    }
    Ok(())
}
