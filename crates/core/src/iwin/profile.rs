//! Firmware profiles (layer: wire, pure). The firmware release the module reports in `I?`
//! (`[identity] firmware`, `C<maj>.<min>.<x>.<y>[.suffix]`, spec §1) decides what hosts see:
//!
//! - **C3.5.2.5 and newer** scan one access point at a time (`F0=2`, then `MR`), as ST's and Mbed's
//!   drivers expect from that release on (spec §3.5, §10);
//! - **C6.x** reports 12 `P?` fields, has a re-writable certificate set 3 and makes it the default
//!   AWS set (spec §3.9, §5), and prints the C6 reset banner (FW strings);
//! - **C6.2.1.8 and newer** changed the framing: the no-payload OK is 12 bytes and UDP `R0` data
//!   ends with an extra CRLF (CMSIS header, spec §2.3);
//! - **C3.5.2.x** answers a `P6=1` whose TCP connect succeeded with `[TCP  RC] Connecting to <ip>`
//!   before OK (spec §10.2: a hardware capture on a B-L475E-IOT01A, which ships C3.5.2.3.BETA9,
//!   and the Rust `es-wifi-driver` written against that board). Nothing public shows C6 doing it,
//!   nor what a UDP or TLS start prints: those keep the bare OK.
//!
//! The sources tie the last two groups to "C6" and to "C6.2.1.8" respectively; nothing says when
//! between C6.1.2.0 and C6.2.1.8 the first group appeared, so it follows the major version.

/// A firmware version: the four numbers of `C<maj>.<min>.<x>.<y>`; a build suffix (`.STM`,
/// `.BETA9`) is not part of the ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FwVersion(pub(crate) [u16; 4]);

impl FwVersion {
    /// `F0=2` one-by-one scanning (ST's `UPDATED_SCAN_PARAMETERS_FW_REV`, Mbed's 3525).
    pub(crate) const SCAN_ONE_BY_ONE: FwVersion = FwVersion([3, 5, 2, 5]);
    /// The 12-byte OK and the extra CRLF after UDP data (CMSIS: "C6.2.1.8 changed framing").
    pub(crate) const LONG_OK: FwVersion = FwVersion([6, 2, 1, 8]);

    /// Parse `C<maj>.<min>.<x>.<y>` with an optional `.suffix`, as ST's `AT_ParseFWRev` reads it.
    pub(crate) fn parse(s: &str) -> Option<FwVersion> {
        let mut parts = s.strip_prefix('C')?.split('.');
        let mut v = [0u16; 4];
        for n in v.iter_mut() {
            let p = parts.next()?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *n = p.parse().ok()?;
        }
        Some(FwVersion(v))
    }
}

impl std::fmt::Display for FwVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "C{a}.{b}.{c}.{d}")
    }
}

/// What changes with the firmware release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Profile {
    pub(crate) version: FwVersion,
}

impl Profile {
    /// The profile of a firmware string; `None` when it is not `C<maj>.<min>.<x>.<y>[.suffix]`.
    pub(crate) fn from_firmware(firmware: &str) -> Option<Profile> {
        FwVersion::parse(firmware).map(|version| Profile { version })
    }

    /// `F0=2` and `MR` deliver the scan one access point at a time.
    pub(crate) fn scan_one_by_one(self) -> bool {
        self.version >= FwVersion::SCAN_ONE_BY_ONE
    }

    /// The C6 family: 12 `P?` fields, set 3 re-writable and the AWS default, the C6 banner.
    pub(crate) fn c6(self) -> bool {
        self.version.0[0] >= 6
    }

    /// The C6.2.1.8 framing: 12-byte no-payload OK, extra CRLF after UDP `R0` data.
    pub(crate) fn long_ok(self) -> bool {
        self.version >= FwVersion::LONG_OK
    }

    /// `P6=1` announces a TCP connect (`[TCP  RC] Connecting to <ip>`): the C3.5.2.x releases.
    pub(crate) fn announces_tcp_connect(self) -> bool {
        self.version.0[..3] == [3, 5, 2]
    }

    /// Fields of the `P?` reply.
    pub(crate) fn transport_fields(self) -> usize {
        if self.c6() {
            12
        } else {
            10
        }
    }

    /// The set `PF=1,<set>` selects at power-up (`0-TLS,3-AWS` on C6, `TLS=0, AWS=2` before).
    pub(crate) fn default_aws_set(self) -> u8 {
        if self.c6() {
            3
        } else {
            2
        }
    }

    /// Certificate set 3 exists and may be programmed any number of times.
    pub(crate) fn rewritable_set3(self) -> bool {
        self.c6()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order_like_st_reads_them() {
        let v = |s| FwVersion::parse(s).unwrap();
        assert_eq!(v("C3.5.2.3.STM"), FwVersion([3, 5, 2, 3]));
        assert_eq!(v("C3.5.2.3.BETA9"), FwVersion([3, 5, 2, 3]));
        assert_eq!(v("C6.2.1.11"), FwVersion([6, 2, 1, 11]));
        assert!(v("C6.2.1.11") > v("C6.2.1.8"), "numeric, not textual");
        assert!(v("C3.5.2.5.STM") >= FwVersion::SCAN_ONE_BY_ONE);
        for bad in [
            "3.5.2.3",
            "C3.5.2",
            "C3.5.x.3",
            "C3..2.3",
            "",
            "C3.5.2.99999",
        ] {
            assert_eq!(FwVersion::parse(bad), None, "{bad:?}");
        }
        assert_eq!(v("C6.2.1.8").to_string(), "C6.2.1.8");
    }

    #[test]
    fn what_each_release_changes() {
        let p = |s| Profile::from_firmware(s).unwrap();
        let rows = [
            // firmware, one-by-one scan, C6 family, 12-byte OK, TCP connect announced
            ("C3.5.2.3.STM", false, false, false, true),
            ("C3.5.2.3.BETA9", false, false, false, true),
            ("C3.5.2.5.STM", true, false, false, true),
            ("C3.5.3.0", true, false, false, false),
            ("C2.5.0.0", false, false, false, false),
            ("C6.2.1.7", true, true, false, false),
            ("C6.2.1.8", true, true, true, false),
            ("C6.2.1.11", true, true, true, false),
        ];
        for (fw, scan, c6, long_ok, connecting) in rows {
            let p = p(fw);
            assert_eq!(
                (
                    p.scan_one_by_one(),
                    p.c6(),
                    p.long_ok(),
                    p.announces_tcp_connect()
                ),
                (scan, c6, long_ok, connecting),
                "{fw}"
            );
            assert_eq!(p.transport_fields(), if c6 { 12 } else { 10 });
            assert_eq!(p.default_aws_set(), if c6 { 3 } else { 2 });
            assert_eq!(p.rewritable_set3(), c6);
        }
    }
}
