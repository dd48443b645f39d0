"""datatrove's side of docs_vs_datatrove.sh: JsonlReader -> FTFYFormatter (NFC, control
characters, HTML entities: the language-agnostic normalizer closest to our clean step) ->
GopherRepetitionFilter -> GopherQualityFilter -> ParquetWriter (zstd), one task, one worker.
Both Gopher filters use datatrove's defaults (English word tokenizer for every document) unless
DT_LANGUAGE names another language for both (e.g. `zh`: the filters take one language each).

usage: [DT_LANGUAGE=zh] docs_datatrove.py INPUT.jsonl WORK_DIR
"""
import os
import sys
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.formatters import FTFYFormatter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import ParquetWriter

inp, work = sys.argv[1], sys.argv[2]
lang = {"language": os.environ["DT_LANGUAGE"]} if os.environ.get("DT_LANGUAGE") else {}
pipeline = [
    JsonlReader(os.path.dirname(os.path.abspath(inp)), glob_pattern=os.path.basename(inp), text_key="text", id_key="id"),
    FTFYFormatter(normalization="NFC"),
    GopherRepetitionFilter(**lang),
    GopherQualityFilter(**lang),
    ParquetWriter(f"{work}/output", compression="zstd"),  # our shards are zstd too
]
t = time.time()
LocalPipelineExecutor(pipeline=pipeline, tasks=1, workers=1, logging_dir=f"{work}/logs", skip_completed=False).run()
print(f"datatrove docs: {time.time() - t:.1f} s", flush=True)
