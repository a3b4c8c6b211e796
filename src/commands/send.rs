//! `x0tta6bl4 send`: send a message through a running node to another node of the mesh.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The sending node's HTTP API, e.g. http://127.0.0.1:8081
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    api: String,
    /// The destination's node id (its PeerId, as `peers` and `routes` print it).
    #[arg(long)]
    to: String,
    /// Send this file's bytes instead of text.
    #[arg(long, conflicts_with = "text")]
    file: Option<PathBuf>,
    /// The text to send.
    #[arg(required_unless_present = "file")]
    text: Option<String>,
    /// Seal the message end to end: only the destination can read it, relays cannot
    /// read or alter it (the destination's keys are fetched over the mesh first).
    #[arg(long)]
    encrypt: bool,
}

pub fn run(args: SendArgs) -> Result<()> {
    let url = format!("{}/api/v1/messages", args.api.trim_end_matches('/'));
    let body = match (&args.file, args.text) {
        (Some(path), _) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let mut body =
                json!({ "to": args.to, "hex": hex::encode(bytes), "encrypt": args.encrypt });
            if args.encrypt {
                // Sealed files travel with their name, type and checksum.
                let mime = mime_of(path);
                body["kind"] = json!(kind_of(mime));
                body["mime"] = json!(mime);
                body["name"] = json!(path.file_name().map(|n| n.to_string_lossy().into_owned()));
            }
            body
        }
        (None, Some(text)) => json!({ "to": args.to, "text": text, "encrypt": args.encrypt }),
        (None, None) => bail!("give the text to send or --file"),
    };
    let answer = super::post_json(&url, &body)?;
    if args.encrypt {
        println!(
            "message {} sealed end to end for {} (follow it with `x0tta6bl4 outbox`)",
            answer["message_id"],
            answer["destination"].as_str().unwrap_or("?")
        );
        return Ok(());
    }
    println!(
        "sent message {} to {} via {}",
        answer["id"],
        answer["destination"].as_str().unwrap_or("?"),
        answer["next_hop"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// A MIME type from the file's extension: enough for the receiver to show it.
pub(crate) fn mime_of(path: &std::path::Path) -> &'static str {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" | "oga" => "audio/ogg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "txt" => "text/plain",
        "json" => "application/json",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

pub(crate) fn kind_of(mime: &str) -> &'static str {
    match mime.split('/').next() {
        Some("image") => "image",
        Some("audio") => "audio",
        Some("video") => "video",
        _ => "file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_get_a_type_and_kind_from_their_extension() {
        assert_eq!(mime_of(std::path::Path::new("a/photo.JPG")), "image/jpeg");
        assert_eq!(kind_of(mime_of(std::path::Path::new("song.mp3"))), "audio");
        assert_eq!(kind_of(mime_of(std::path::Path::new("clip.webm"))), "video");
        assert_eq!(kind_of(mime_of(std::path::Path::new("notes"))), "file");
    }
}
