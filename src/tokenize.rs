//! Tokenization with any HF `tokenizer.json` (the Qwen2.5 tokenizer ships with the project).
