#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscope_fuzz::cot_tasks(data);
});
