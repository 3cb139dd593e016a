// Matches ClamAV's harmless test program `clam.exe` (from Debian's
// clamav-testfiles) by the sha256 of the whole object: it fires only when an
// unpacker hands the program over byte for byte, wherever it is hidden.
// Used by scripts/coverage.sh.
import "hash"

rule clam_exe {
    meta:
        description = "ClamAV's test program clam.exe, byte for byte"
        severity = "malicious"
    condition:
        filesize == 544 and hash.sha256(0, filesize) == "71e7b604d18aefd839e51a39c88df8383bb4c071dc31f87f00a2b5df580d4495"
}
