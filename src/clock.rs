//! Wall-clock time as the contract carries it: milliseconds since the Unix
//! epoch (registration and heartbeat times, ages shown to operators).

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
