/// Text that remote parties wrote (addresses, HELO names, subjects, replies, ENVID and ORCPT values)
/// made safe for a terminal: control characters (C0, DEL, C1), line and paragraph separators and
/// bidirectional overrides are shown as escapes (`\r`, `\n`, `\x1b`, `\u{202e}`) instead of being
/// sent to the terminal, so a Subject cannot clear a screen, set a window title, rewrite a
/// previous line or reorder what an admin reads. `--json` output is escaped by its encoder instead.
///
/// ```swift
/// shown("Hi\u{1b}[2J")  // "Hi\\x1b[2J"
/// ```
func shown(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: needsEscape) else { return text }
    var out = ""
    for u in text.unicodeScalars {
        guard needsEscape(u) else {
            out.unicodeScalars.append(u)
            continue
        }
        switch u {
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            let hex = String(u.value, radix: 16)
            out += u.value < 0x100 ? "\\x" + String(repeating: "0", count: 2 - hex.count) + hex : "\\u{\(hex)}"
        }
    }
    return out
}

/// Optional text, `-` when absent.
func shown(_ text: String?) -> String { text.map { shown($0) } ?? "-" }

private func needsEscape(_ u: Unicode.Scalar) -> Bool {
    switch u.value {
    case 0..<0x20, 0x7F...0x9F: return true
    case 0x2028, 0x2029: return true
    case 0x202A...0x202E, 0x2066...0x2069, 0x200E, 0x200F, 0x061C: return true
    default: return false
    }
}
