//! CoreTech IPC descriptions: JSONL `{ipc, des, ori_des}`.

use crate::doc::Record;
use crate::error::ReadError;

use super::{Format, Framing, ParseContext, RawRecord};

/// CoreTech IPC descriptions: JSONL `{ipc, des, ori_des}`.
pub struct IpcJsonl;

impl Format for IpcJsonl {
    fn name(&self) -> &'static str {
        "ipc-jsonl"
    }
    fn source(&self) -> &'static str {
        "ipc"
    }
    fn sniff(&self, _head: &[u8]) -> bool {
        false // TODO(reader): content sniffing
    }
    fn framing(&self) -> Framing {
        Framing::Lines
    }
    fn parse(&self, raw: &RawRecord, _cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        Err(raw.error("unsupported", "the ipc-jsonl reader is not implemented yet"))
    }
}
