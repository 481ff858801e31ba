//! How responses become stored bytes and back.

use std::future::{ready, Future, Ready};

use bytes::Bytes;

use crate::BoxError;

/// Turns responses into bytes for the tiers and back.
pub trait Codec<Res>: Send + Sync + 'static {
    /// What the cache service returns, for hits and misses alike.
    type Response: Send + 'static;
    /// The future of [`Codec::encode`].
    type EncodeFuture: Future<Output = Result<(Self::Response, Option<Bytes>), BoxError>>
        + Send
        + 'static;

    /// Turns an origin response into the response to return and, if it can be stored,
    /// its stored bytes.
    fn encode(&self, res: Res) -> Self::EncodeFuture;

    /// Rebuilds a response from stored bytes.
    fn decode(&self, stored: Bytes) -> Result<Self::Response, BoxError>;

    /// Passes an origin response through unstored.
    fn passthrough(&self, res: Res) -> Self::Response;
}

/// The codec for services whose responses are already [`Bytes`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec<Bytes> for BytesCodec {
    type Response = Bytes;
    type EncodeFuture = Ready<Result<(Bytes, Option<Bytes>), BoxError>>;

    fn encode(&self, res: Bytes) -> Self::EncodeFuture {
        ready(Ok((res.clone(), Some(res))))
    }

    #[inline]
    fn decode(&self, stored: Bytes) -> Result<Bytes, BoxError> {
        Ok(stored)
    }

    fn passthrough(&self, res: Bytes) -> Bytes {
        res
    }
}
