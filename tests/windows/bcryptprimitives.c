/* Wine 8 lacks bcryptprimitives.dll, whose ProcessPrng Rust's standard
   library imports on Windows. This stand-in forwards to RtlGenRandom
   (SystemFunction036 in advapi32). A test fixture for running the Windows
   agent under Wine: built into the test's Wine prefix, never shipped. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
