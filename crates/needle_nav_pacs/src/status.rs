//! DIMSE status codes (PS3.7 annex C and the service classes of PS3.4) in words.

/// What a status code says about the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    /// More responses follow (C-FIND matches, C-GET progress).
    Pending,
    /// Done, with something the caller should know.
    Warning,
    Cancelled,
    Failure,
}

/// The class of a status code and what it means.
pub fn status_meaning(code: u16) -> (StatusClass, &'static str) {
    use StatusClass::*;
    match code {
        0x0000 => (Success, "success"),
        0xFF00 => (Pending, "pending"),
        0xFF01 => (Pending, "pending, some optional keys not supported"),
        0xFE00 => (Cancelled, "cancelled"),
        0x0001 => (Warning, "requested optional attributes are not supported"),
        0x0107 => (Warning, "attribute list error"),
        0x0116 => (Warning, "attribute value out of range"),
        0xB000 => (Warning, "sub-operations complete, one or more failed (or coercion of data elements)"),
        0xB006 => (Warning, "elements discarded"),
        0xB007 => (Warning, "data set does not match SOP class"),
        0x0105 => (Failure, "no such attribute"),
        0x0106 => (Failure, "invalid attribute value"),
        0x0110 => (Failure, "processing failure"),
        0x0111 => (Failure, "duplicate SOP instance"),
        0x0112 => (Failure, "no such SOP instance"),
        0x0117 => (Failure, "invalid object instance"),
        0x0118 => (Failure, "no such SOP class"),
        0x0119 => (Failure, "class-instance conflict"),
        0x0122 => (Failure, "SOP class not supported"),
        0x0124 => (Failure, "not authorised (refused by the PACS's access rules)"),
        0x0210 => (Failure, "duplicate invocation"),
        0x0211 => (Failure, "unrecognised operation"),
        0x0212 => (Failure, "mistyped argument"),
        0x0213 => (Failure, "resource limitation"),
        0xA700..=0xA7FF => (Failure, "refused: out of resources"),
        0xA801 => (Failure, "refused: move destination unknown"),
        0xA900..=0xA9FF => (Failure, "data set or identifier does not match SOP class"),
        0xC000..=0xCFFF => (Failure, "unable to process (the PACS could not handle the request)"),
        0xA000..=0xAFFF => (Failure, "refused"),
        _ => (Failure, "unknown status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_from_the_standard_map_to_their_class_and_words() {
        // PS3.4 C.4.3.1.4 (C-GET) and B.2.3 (C-STORE), PS3.7 C.
        assert_eq!(status_meaning(0x0000).0, StatusClass::Success);
        assert_eq!(status_meaning(0xFF00).0, StatusClass::Pending);
        assert_eq!(status_meaning(0xFF01).0, StatusClass::Pending);
        assert_eq!(status_meaning(0xFE00).0, StatusClass::Cancelled);
        assert_eq!(status_meaning(0xB000).0, StatusClass::Warning);
        assert_eq!(status_meaning(0xA702), (StatusClass::Failure, "refused: out of resources"));
        assert_eq!(status_meaning(0xA801).1, "refused: move destination unknown");
        assert_eq!(status_meaning(0xC123).0, StatusClass::Failure);
        assert!(status_meaning(0xC001).1.contains("unable to process"));
        assert!(status_meaning(0x0124).1.contains("not authorised"));
        assert_eq!(status_meaning(0x0122).1, "SOP class not supported");
        assert_eq!(status_meaning(0x1234), (StatusClass::Failure, "unknown status"));
    }
}
