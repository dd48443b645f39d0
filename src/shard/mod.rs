//! Shards on disk: the atomic Parquet writer, the document shard schema, the manifest, and
//! (for token shards) the streaming reader the trainer uses.

pub mod batch;
pub mod documents;
pub mod manifest;
pub mod reader;
pub mod tokens;
pub mod writer;

pub use batch::Batch;
pub use manifest::{verified_shards, InputShard, Manifest, ShardInfo, MANIFEST_FILE};
pub use reader::{Loader, LoaderConfig};
pub use writer::{ShardWriter, WriterConfig};
