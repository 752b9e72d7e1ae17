//! The client's layout: the fields every delivery and write read stay in
//! the struct's first cache lines (see [`Client`]'s `repr(C)` note), so
//! that a field added in the wrong place fails here rather than quietly
//! costing S1 a cache miss per delivery.

use std::mem::offset_of;

use super::Client;
use crate::pipeline::fanout::catchup::Catchup;

/// The lines the hot fields may use.
const HOT_BYTES: usize = 4 * 64;

#[test]
fn the_fields_a_delivery_reads_sit_in_the_first_four_cache_lines() {
    let hot = [
        ("open_bin", offset_of!(Client, open_bin)),
        ("keys", offset_of!(Client, keys)),
        ("wbuf", offset_of!(Client, wbuf)),
        ("sent", offset_of!(Client, sent)),
        ("cap", offset_of!(Client, cap)),
        ("frame_ends", offset_of!(Client, frame_ends)),
        ("stats", offset_of!(Client, stats)),
        ("write", offset_of!(Client, write)),
        ("oldest_rx", offset_of!(Client, oldest_rx)),
        ("unwritten_live", offset_of!(Client, unwritten_live)),
        ("frames_sent", offset_of!(Client, frames_sent)),
        ("entitlement", offset_of!(Client, entitlement)),
        ("order", offset_of!(Client, order)),
        ("control", offset_of!(Client, control)),
        ("dirty", offset_of!(Client, dirty)),
        ("blocked", offset_of!(Client, blocked)),
        ("closing", offset_of!(Client, closing)),
        ("encoding", offset_of!(Client, encoding)),
        ("ts_format", offset_of!(Client, ts_format)),
        ("star", offset_of!(Client, star)),
        ("reach_period", offset_of!(Client, reach_period)),
    ];
    for (name, at) in hot {
        assert!(at < HOT_BYTES, "{name} at byte {at}, past the hot lines");
    }
    // The catch-up floor (read for every live tick) ends the fourth line,
    // its cursor starts the fifth.
    let (floor_in, cursor_in) = Catchup::hot_offsets();
    let floor = offset_of!(Client, catchup) + floor_in;
    assert!(floor + 8 <= HOT_BYTES, "catch-up floor at byte {floor}");
    assert_eq!(cursor_in, floor_in + 8, "the cursor right after the floor");
    // Everything else comes after.
    for (name, at) in [
        ("behind_since", offset_of!(Client, behind_since)),
        ("known_ids", offset_of!(Client, known_ids)),
        ("held_books", offset_of!(Client, held_books)),
    ] {
        assert!(at > floor, "{name} at byte {at}, among the hot fields");
    }
}
