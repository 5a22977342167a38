fn main() {
    afl::fuzz!(|data: &[u8]| {
        ferry_fuzz::ledger(data);
    });
}
