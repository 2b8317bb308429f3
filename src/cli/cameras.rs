//! `bvae cameras`: list the cameras `--source camera:INDEX` can open, with
//! the formats, sizes and frame rates each offers.

use anyhow::Result;
use serde_json::json;

use crate::source::list_cameras;

/// Arguments of `bvae cameras`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array ([{index, name, description, usable, formats:
    /// [{fourcc, description, format, sizes}]}]) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `bvae cameras`.
pub fn run(args: Args) -> Result<()> {
    let cams = list_cameras()?;
    if args.json {
        let list: Vec<_> = cams
            .iter()
            .map(|c| {
                json!({
                    "index": c.index,
                    "name": c.name,
                    "description": c.description,
                    "usable": c.unusable.is_none(),
                    "why_not": c.unusable,
                    "formats": c.formats.iter().map(|f| json!({
                        "fourcc": f.fourcc,
                        "description": f.description,
                        "format": f.spec,
                        "sizes": f.sizes,
                    })).collect::<Vec<_>>(),
                })
            })
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
        match &c.unusable {
            Some(why) => println!(
                "camera:{}  {}  ({}): cannot be used: {why}",
                c.index, c.name, c.description
            ),
            None => println!("camera:{}  {}  ({})", c.index, c.name, c.description),
        }
        for f in &c.formats {
            let spec = f
                .spec
                .as_ref()
                .map_or("(not decoded by bvae)".to_string(), |s| {
                    format!("format={s}")
                });
            println!("  {} {:<22} {spec}", f.fourcc, f.description);
            println!("      {}", f.sizes);
        }
    }
    println!(
        "open one with --source camera:INDEX[,format=F,width=W,height=H,fps=R]; without them \
         bvae takes the first of yuyv, nv12, rgb, gray, mjpeg at 640x480 (or the closest size) \
         and 30 fps where offered"
    );
    Ok(())
}
