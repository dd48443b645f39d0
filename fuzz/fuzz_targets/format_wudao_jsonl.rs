#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    coretech_fuzz::format("wudao-jsonl", data);
});
