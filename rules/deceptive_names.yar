// File names that hide an executable behind a document extension.
// Uses the qala_filename / qala_file_type globals the engine sets per object.
rule Qala_Double_Extension_Executable : suspicious
{
    meta:
        author = "Qala"
        description = "Executable whose name ends in a document extension followed by an executable one (invoice.pdf.exe)"
        severity = "suspicious"
        mitre_attack = "T1036.007"

    condition:
        qala_filename matches /\.(pdf|docx?|xlsx?|pptx?|rtf|txt|jpe?g|png|gif|zip)\.(exe|scr|com|pif|bat|cmd|js|jse|vbs|vbe|wsf|hta|lnk)$/i
}

rule Qala_Executable_In_Archive_With_Script_Extension : suspicious
{
    meta:
        author = "Qala"
        description = "A PE executable stored inside an archive under a non-executable extension"
        severity = "suspicious"
        mitre_attack = "T1036.008"

    condition:
        qala_depth > 0 and qala_file_type == "pe" and
        qala_filename matches /\.(txt|pdf|jpe?g|png|gif|docx?|xlsx?|csv|log)$/i
}
