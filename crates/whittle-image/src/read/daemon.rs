//! Reading from a Docker Engine (or podman's Docker-compatible socket): `docker save` over the
//! API into a spool file, then read as a docker-archive. `DOCKER_HOST` is honoured.

use std::io::Write;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::{Error, Image, ImageRef, Result, Transport};

pub(crate) fn connect() -> Result<bollard::Docker> {
    let docker = bollard::Docker::connect_with_defaults()
        .map_err(|e| Error::Daemon(format!("cannot connect: {e}")))?;
    // Loading or saving a large image can take minutes; the library default is 2 minutes.
    Ok(docker.with_timeout(std::time::Duration::from_secs(3600)))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Daemon(format!("cannot start I/O runtime: {e}")))
}

pub(super) fn open(r: &ImageRef) -> Result<Image> {
    let name = r.name.clone().unwrap_or_default();
    let spool = tempfile::Builder::new()
        .prefix("whittle-save-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let path = spool.path().join("image.tar");
    let mut file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    runtime()?.block_on(async {
        let docker = connect()?;
        docker
            .inspect_image(&name)
            .await
            .map_err(|e| Error::Daemon(format!("{name}: {e}")))?;
        let mut stream = docker.export_image(&name);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Daemon(format!("saving {name}: {e}")))?;
            file.write_all(&chunk).map_err(|e| Error::io(&path, e))?;
        }
        Ok::<_, Error>(())
    })?;
    let archive = ImageRef {
        transport: Transport::DockerArchive,
        path,
        // A save of one image holds exactly that image; its RepoTags may spell the name
        // differently (`docker.io/library/…`), so select by position, not by name.
        name: None,
    };
    let mut image = super::docker_archive::open(&archive, Some(Arc::new(spool)))?;
    image.reference = r.clone();
    Ok(image)
}

/// Checks the engine answers before a long build whose result it must take.
pub(crate) fn ping() -> Result<()> {
    runtime()?.block_on(async {
        connect()?
            .ping()
            .await
            .map_err(|e| Error::Daemon(format!("not reachable: {e}")))?;
        Ok(())
    })
}

/// `docker load` of a docker-archive file, streamed from disk.
pub(crate) fn load(path: &std::path::Path) -> Result<()> {
    use tokio_util_free::file_chunks;
    runtime()?.block_on(async {
        let docker = connect()?;
        let body = bollard::body_try_stream(file_chunks(path.to_path_buf()));
        let mut stream = docker.import_image(
            bollard::query_parameters::ImportImageOptions {
                quiet: true,
                ..Default::default()
            },
            body,
            None,
        );
        while let Some(msg) = stream.next().await {
            let msg = msg.map_err(|e| Error::Daemon(format!("loading image: {e}")))?;
            if let Some(e) = msg.error_detail.and_then(|d| d.message) {
                return Err(Error::Daemon(format!("loading image: {e}")));
            }
        }
        Ok(())
    })
}

/// Reads a file as a stream of chunks without pulling in a codec crate for one call site.
mod tokio_util_free {
    use std::path::PathBuf;

    use bytes::Bytes;
    use futures_util::Stream;
    use tokio::io::AsyncReadExt;

    pub(super) fn file_chunks(path: PathBuf) -> impl Stream<Item = std::io::Result<Bytes>> {
        futures_util::stream::try_unfold(None, move |file: Option<tokio::fs::File>| {
            let path = path.clone();
            async move {
                let mut file = match file {
                    Some(f) => f,
                    None => tokio::fs::File::open(&path).await?,
                };
                let mut buf = vec![0u8; 1 << 20];
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some((Bytes::from(buf), Some(file))))
            }
        })
    }
}
