// Script-based droppers and download cradles.
rule Qala_PowerShell_Encoded_Download_Cradle : suspicious
{
    meta:
        author = "Qala"
        description = "PowerShell launched hidden with an encoded command, or a web download piped into Invoke-Expression"
        severity = "suspicious"
        mitre_attack = "T1059.001, T1027.010, T1105"

    strings:
        $ps = "powershell" nocase
        $enc1 = /-e(nc(odedcommand)?)?\s+[A-Za-z0-9+\/=]{40,}/ nocase
        $hidden = /-w(indowstyle)?\s+hidden/ nocase
        $dl1 = "DownloadString" nocase
        $dl2 = "DownloadFile" nocase
        $dl3 = "Invoke-WebRequest" nocase
        $iex1 = "IEX" nocase fullword
        $iex2 = "Invoke-Expression" nocase

    condition:
        filesize < 5MB and $ps and (($enc1 and $hidden) or (any of ($dl*) and any of ($iex*)))
}

rule Qala_Office_AutoExec_Macro : suspicious
{
    meta:
        author = "Qala"
        description = "VBA project with an auto-executing macro that shells out"
        severity = "suspicious"
        mitre_attack = "T1204.002, T1059.005"

    strings:
        $vba = "Attribute VB_Name" ascii
        $auto1 = "AutoOpen" nocase
        $auto2 = "Document_Open" nocase
        $auto3 = "Workbook_Open" nocase
        $shell1 = "Shell" nocase fullword
        $shell2 = "WScript.Shell" nocase
        $shell3 = "CreateObject" nocase

    condition:
        $vba and any of ($auto*) and any of ($shell*)
}
