fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Some(text) = ferry_fuzz::text(data) {
            ferry_fuzz::inventory(text);
        }
    });
}
