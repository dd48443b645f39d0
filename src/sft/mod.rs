//! SFT data: LLaMA-Factory alpaca/sharegpt inputs, IPC validation, decontamination, difficulty
//! grading, curriculum stages and ChatML templating.
