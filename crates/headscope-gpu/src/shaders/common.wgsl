// Shared by every kernel: what changes per submission (rows in this chunk, first position, decode or
// prefill). Written once per submission with queue.write_buffer; everything else is a static uniform.
struct Run {
    rows: u32,
    pos: u32,
    decoding: u32,
    pad: u32,
}
