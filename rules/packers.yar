import "pe"

// Packed executables: not malicious by themselves, worth a look.
rule Qala_UPX_Packed_PE : packer
{
    meta:
        author = "Qala"
        description = "PE packed with UPX (UPX0/UPX1 section names)"
        severity = "info"
        mitre_attack = "T1027.002"

    condition:
        pe.is_pe and for any s in pe.sections : (s.name == "UPX0" or s.name == "UPX1")
}

rule Qala_PE_Entry_Point_Writable_Executable : suspicious
{
    meta:
        author = "Qala"
        description = "PE whose entry point lies in a section that is both writable and executable"
        severity = "suspicious"
        mitre_attack = "T1027.002"

    condition:
        pe.is_pe and for any s in pe.sections : (
            pe.entry_point_raw >= s.virtual_address and
            pe.entry_point_raw < s.virtual_address + s.virtual_size and
            s.characteristics & pe.SECTION_MEM_WRITE != 0 and
            s.characteristics & pe.SECTION_MEM_EXECUTE != 0
        )
}
