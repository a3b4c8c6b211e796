//! Envelopes on a libp2p request-response stream: a 4-byte big-endian length, then the bytes.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use x0_protocols::envelope::MAX_ENVELOPE_BYTES;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/x0tta6bl4/envelope/1");

/// Requests are encoded envelopes; a response is an envelope or empty (a plain ack).
#[derive(Clone, Copy, Debug, Default)]
pub struct EnvelopeCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    // Bounded before allocating: a peer cannot make us reserve more than one envelope.
    if len > MAX_ENVELOPE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_ENVELOPE_BYTES}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|l| *l as usize <= MAX_ENVELOPE_BYTES)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "envelope too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

impl libp2p::request_response::Codec for EnvelopeCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        futures::executor::block_on(async {
            let mut buf = Cursor::new(Vec::new());
            write_frame(&mut buf, b"hello").await.expect("write");
            let mut read = Cursor::new(buf.into_inner());
            assert_eq!(read_frame(&mut read).await.expect("read"), b"hello");

            let huge = ((MAX_ENVELOPE_BYTES + 1) as u32).to_be_bytes();
            let mut read = Cursor::new(huge.to_vec());
            assert_eq!(
                read_frame(&mut read).await.expect_err("refused").kind(),
                io::ErrorKind::InvalidData
            );
        });
    }
}
