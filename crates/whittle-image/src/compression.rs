//! Layer compression, detected from magic bytes rather than trusted from media types (docker
//! archives carry no media type at all, and mislabelled blobs exist in the wild).

use std::io::{self, BufRead, BufReader, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> io::Result<Compression> {
        match head {
            [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
            [0x42, 0x5a, 0x68, ..] => Err(io::Error::other("bzip2 layers are not supported")),
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => {
                Err(io::Error::other("xz layers are not supported"))
            }
            _ => Ok(Compression::None),
        }
    }

    /// OCI media type of a layer stored with this compression.
    pub fn oci_layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Wraps `r` in the right decoder after peeking at its first bytes.
pub fn decompress<'a, R: Read + Send + 'a>(
    r: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let mut buf = BufReader::with_capacity(256 << 10, r);
    let head = buf.fill_buf()?;
    let c = Compression::detect(head)?;
    let reader: Box<dyn Read + Send + 'a> = match c {
        Compression::None => Box::new(buf),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
    };
    Ok((c, reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_and_decodes() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"payload").unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&b"payload"[..], 1).unwrap();
        for (data, kind) in [
            (gz, Compression::Gzip),
            (zs, Compression::Zstd),
            (b"payload".to_vec(), Compression::None),
        ] {
            let (c, mut r) = decompress(&data[..]).unwrap();
            assert_eq!(c, kind);
            let mut out = String::new();
            r.read_to_string(&mut out).unwrap();
            assert_eq!(out, "payload");
        }
        assert!(Compression::detect(b"BZh9").is_err());
    }
}
