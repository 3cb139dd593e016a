//! Every tool the round trip runs: which Debian package has it, the format
//! it writes (and 7-Zip's name for that format, where `7zz` reads it), and
//! the shell that makes `out` from the files named in `$IN` (in the working
//! directory). Formats Qala does not read are in [`GAPS`] with the reason.

pub struct Tool {
    /// Unique, `format-variant`.
    pub id: &'static str,
    /// The Debian package the program comes from.
    pub package: &'static str,
    /// 7-Zip's name of the format (`7zz i`), if 7-Zip reads it.
    pub sevenzip: Option<&'static str>,
    /// Takes several files and directories (an archive), not one stream.
    pub multi: bool,
    /// The file the script writes.
    pub out: &'static str,
    pub sh: &'static str,
}

const fn t(
    id: &'static str,
    package: &'static str,
    sevenzip: &'static str,
    multi: bool,
    out: &'static str,
    sh: &'static str,
) -> Tool {
    let sevenzip = if sevenzip.is_empty() { None } else { Some(sevenzip) };
    Tool { id, package, sevenzip, multi, out, sh }
}

/// Copy `$IN` into `root/` (for the image makers).
macro_rules! root {
    ($rest:literal) => {
        concat!("mkdir -p root && cp -r $IN root/ && ", $rest)
    };
}

pub const TOOLS: &[Tool] = &[
    // 7-Zip: every format it writes, every 7z method and filter, every zip method.
    t("7z-lzma2", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z out.7z $IN"),
    t("7z-lzma", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -m0=LZMA out.7z $IN"),
    t("7z-ppmd", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -m0=PPMd out.7z $IN"),
    t("7z-bzip2", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -m0=BZip2 out.7z $IN"),
    t("7z-deflate", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -m0=Deflate out.7z $IN"),
    t("7z-deflate64", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -m0=Deflate64 out.7z $IN"),
    t("7z-copy", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -m0=Copy out.7z $IN"),
    t("7z-bcj", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -mf=BCJ out.7z $IN"),
    t("7z-bcj2", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -mf=BCJ2 out.7z $IN"),
    t("7z-arm64", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -mf=ARM64 out.7z $IN"),
    t("7z-riscv", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -mf=RISCV out.7z $IN"),
    t("7z-arm", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -mf=ARM out.7z $IN"),
    t("7z-armt", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -mf=ARMT out.7z $IN"),
    t("7z-ppc", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -mf=PPC out.7z $IN"),
    t("7z-ia64", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -mf=IA64 out.7z $IN"),
    t("7z-sparc", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -mf=SPARC out.7z $IN"),
    t("7z-delta", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -mf=Delta:4 out.7z $IN"),
    t("7z-swap2", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -mf=Swap2 out.7z $IN"),
    t("7z-swap4", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -mf=Swap4 out.7z $IN"),
    t("7z-nonsolid", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -ms=off -mhc=off out.7z $IN"),
    t("7z-aes", "7zip", "7z", true, "out.7z", "7zz a -bso0 -bsp0 -t7z -pinfected out.7z $IN"),
    t("zip-deflate", "7zip", "zip", true, "out.zip", "7zz a -bso0 -bsp0 -tzip -mm=Deflate out.zip $IN"),
    t("zip-deflate64", "7zip", "zip", true, "out.zip", "7zz a -bso0 -bsp0 -tzip -mm=Deflate64 out.zip $IN"),
    t("zip-bzip2", "7zip", "zip", true, "out.zip", "7zz a -bso0 -bsp0 -tzip -mm=BZip2 out.zip $IN"),
    t("zip-lzma", "7zip", "zip", true, "out.zip", "7zz a -bso0 -bsp0 -tzip -mm=LZMA out.zip $IN"),
    t("zip-ppmd", "7zip", "zip", true, "out.zip", "7zz a -bso0 -bsp0 -tzip -mm=PPMd out.zip $IN"),
    t("zip-xz", "7zip", "zip", true, "out.zip", "7zz a -bso0 -bsp0 -tzip -mm=XZ out.zip $IN"),
    t("zip-copy", "7zip", "zip", true, "out.zip", "7zz a -bso0 -bsp0 -tzip -mm=Copy out.zip $IN"),
    t("zip-zipcrypto", "7zip", "zip", true, "out.zip", "7zz a -bso0 -bsp0 -tzip -pinfected out.zip $IN"),
    t("zip-aes256", "7zip", "zip", true, "out.zip", "7zz a -bso0 -bsp0 -tzip -mem=AES256 -pinfected out.zip $IN"),
    t("tar-7zip", "7zip", "tar", true, "out.tar", "7zz a -bso0 -bsp0 -ttar out.tar $IN"),
    t("wim-7zip", "7zip", "wim", true, "out.wim", "7zz a -bso0 -bsp0 -twim out.wim $IN"),
    t("gzip-7zip", "7zip", "gzip", false, "out.gz", "7zz a -bso0 -bsp0 -tgzip out.gz $IN"),
    t("bzip2-7zip", "7zip", "bzip2", false, "out.bz2", "7zz a -bso0 -bsp0 -tbzip2 out.bz2 $IN"),
    t("xz-7zip", "7zip", "xz", false, "out.xz", "7zz a -bso0 -bsp0 -txz out.xz $IN"),
    // Info-ZIP.
    t("zip-infozip", "zip", "zip", true, "out.zip", "zip -q -r out.zip $IN"),
    t("zip-infozip-store", "zip", "zip", true, "out.zip", "zip -q -0 -r out.zip $IN"),
    t("zip-infozip-bzip2", "zip", "zip", true, "out.zip", "zip -q -Z bzip2 -r out.zip $IN"),
    t(
        "zip-infozip-sfx",
        "zip",
        "zip",
        true,
        "out.exe",
        "zip -q -r out.zip $IN && cat /bin/true out.zip > out.exe && zip -q -A out.exe",
    ),
    // tar, pax, cpio.
    t("tar-gnu", "tar", "tar", true, "out.tar", "tar --format=gnu -cf out.tar $IN"),
    t("tar-oldgnu", "tar", "tar", true, "out.tar", "tar --format=oldgnu -cf out.tar $IN"),
    t("tar-ustar", "tar", "tar", true, "out.tar", "tar --format=ustar -cf out.tar $IN"),
    t("tar-pax", "tar", "tar", true, "out.tar", "tar --format=pax -cf out.tar $IN"),
    t("tar-v7", "tar", "tar", true, "out.tar", "tar --format=v7 -cf out.tar $IN"),
    t("tar-gz", "tar", "", true, "out.tgz", "tar -czf out.tgz $IN"),
    t("pax-ustar", "pax", "tar", true, "out.tar", "pax -w -x ustar -f out.tar $IN"),
    t("pax-cpio", "pax", "Cpio", true, "out.cpio", "pax -w -x cpio -f out.cpio $IN"),
    t("pax-sv4cpio", "pax", "Cpio", true, "out.cpio", "pax -w -x sv4cpio -f out.cpio $IN"),
    t("pax-sv4crc", "pax", "Cpio", true, "out.cpio", "pax -w -x sv4crc -f out.cpio $IN"),
    t("pax-bcpio", "pax", "Cpio", true, "out.cpio", "pax -w -x bcpio -f out.cpio $IN"),
    t("cpio-newc", "cpio", "Cpio", true, "out.cpio", "find $IN | cpio -o --quiet -H newc > out.cpio"),
    t("cpio-odc", "cpio", "Cpio", true, "out.cpio", "find $IN | cpio -o --quiet -H odc > out.cpio"),
    t("cpio-bin", "cpio", "Cpio", true, "out.cpio", "find $IN | cpio -o --quiet -H bin > out.cpio"),
    t("cpio-crc", "cpio", "Cpio", true, "out.cpio", "find $IN | cpio -o --quiet -H crc > out.cpio"),
    t("cpio-hpodc", "cpio", "Cpio", true, "out.cpio", "find $IN | cpio -o --quiet -H hpodc > out.cpio"),
    t("cpio-ustar", "cpio", "tar", true, "out.tar", "find $IN | cpio -o --quiet -H ustar > out.tar"),
    // Compressors.
    t("gzip", "gzip", "gzip", false, "out.gz", "gzip -9 -c $IN > out.gz"),
    t("gzip-pigz", "pigz", "gzip", false, "out.gz", "pigz -c $IN > out.gz"),
    t("gzip-zopfli", "zopfli", "gzip", false, "out.gz", "zopfli -c --i1 $IN > out.gz"),
    t("zlib-pigz", "pigz", "", false, "out.zz", "pigz -z -c $IN > out.zz"),
    t("bzip2", "bzip2", "bzip2", false, "out.bz2", "bzip2 -c $IN > out.bz2"),
    t("bzip2-pbzip2", "pbzip2", "bzip2", false, "out.bz2", "pbzip2 -c -b1 $IN > out.bz2"),
    t("xz", "xz-utils", "xz", false, "out.xz", "xz -c $IN > out.xz"),
    t("xz-blocks", "xz-utils", "xz", false, "out.xz", "xz -c --block-size=65536 -T2 $IN > out.xz"),
    t("xz-pixz", "pixz", "xz", false, "out.xz", "pixz < $IN > out.xz"),
    t("lzma-xz", "xz-utils", "lzma", false, "out.lzma", "xz --format=lzma -c $IN > out.lzma"),
    t("lzma-alone", "lzma", "lzma", false, "out.lzma", "lzma -c $IN > out.lzma"),
    t("zstd", "zstd", "zstd", false, "out.zst", "zstd -q -c $IN > out.zst"),
    t("zstd-long", "zstd", "zstd", false, "out.zst", "zstd -q -19 --long=27 -c $IN > out.zst"),
    t(
        "zstd-multiframe",
        "zstd",
        "zstd",
        false,
        "out.zst",
        "head -c 100000 $IN | zstd -q -c > out.zst && tail -c +100001 $IN | zstd -q -c >> out.zst",
    ),
    t("lz4", "lz4", "", false, "out.lz4", "lz4 -q -c $IN > out.lz4"),
    t("lz4-legacy", "lz4", "", false, "out.lz4", "lz4 -q -l -c $IN > out.lz4"),
    t("lzip", "lzip", "", false, "out.lz", "lzip -c $IN > out.lz"),
    t("lzip-plzip", "plzip", "", false, "out.lz", "plzip -c -B 65536 $IN > out.lz"),
    t("lzop", "lzop", "", false, "out.lzo", "lzop -c $IN > out.lzo"),
    t("brotli", "brotli", "", false, "out.br", "brotli -c $IN > out.br"),
    t("compress", "ncompress", "Z", false, "out.Z", "compress -c $IN > out.Z"),
    t("compress-b12", "ncompress", "Z", false, "out.Z", "compress -b 12 -c $IN > out.Z"),
    t("szdd-mscompress", "mscompress", "MsLZ", false, "out.ex_", "cp $IN s.exe && mscompress s.exe && mv s.exe_ out.ex_"),
    t("rzip", "rzip", "", false, "out.rz", "rzip -k -o out.rz $IN"),
    t("lrzip", "lrzip", "", false, "out.lrz", "lrzip -q -o out.lrz $IN"),
    t("zpaq", "zpaq", "", true, "out.zpaq", "zpaq a out.zpaq $IN >/dev/null"),
    t("kgb", "kgb", "", true, "out.kgb", "kgb out.kgb $IN >/dev/null"),
    // Archivers of their own formats.
    t("arj", "arj", "Arj", true, "out.arj", "arj a -r -y out.arj $IN >/dev/null"),
    t("arj-m4", "arj", "Arj", true, "out.arj", "arj a -m4 -r -y out.arj $IN >/dev/null"),
    t("arj-store", "arj", "Arj", true, "out.arj", "arj a -m0 -r -y out.arj $IN >/dev/null"),
    t("lha-lh5", "jlha-utils", "Lzh", true, "out.lzh", "jlha ao5q out.lzh $IN"),
    t("lha-lh6", "jlha-utils", "Lzh", true, "out.lzh", "jlha ao6q out.lzh $IN"),
    t("lha-lh7", "jlha-utils", "Lzh", true, "out.lzh", "jlha ao7q out.lzh $IN"),
    t("arc", "arc", "", true, "out.arc", "arc a out.arc $IN >/dev/null"),
    t("nufx", "nulib2", "", true, "out.shk", "nulib2 -aer out.shk $IN >/dev/null"),
    t("dar", "dar", "", true, "out.1.dar", "dar -Q -c out -R . -g $IN >/dev/null"),
    // Cabinets, installers, help.
    t("cab-gcab", "gcab", "Cab", true, "out.cab", "gcab -c out.cab $IN"),
    t("cab-gcab-mszip", "gcab", "Cab", true, "out.cab", "gcab -cz out.cab $IN"),
    t(
        "msi-wixl",
        "wixl",
        "Compound",
        false,
        "out.msi",
        "cat > s.wxs <<'EOF'\n<?xml version='1.0'?><Wix xmlns='http://schemas.microsoft.com/wix/2006/wi'><Product Id='*' Name='Q' Language='1033' Version='1.0.0' Manufacturer='Q' UpgradeCode='2a4a0e1c-9c4b-4f0e-8f55-6d1a3e0b7c01'><Package InstallerVersion='200' Compressed='yes'/><Media Id='1' Cabinet='p.cab' EmbedCab='yes'/><Directory Id='TARGETDIR' Name='SourceDir'><Directory Id='ProgramFilesFolder'><Directory Id='D' Name='Q'><Component Id='C' Guid='3b5b1f2d-0d5c-4a1f-9e66-7e2b4f1c8d02'><File Id='F' Source='$IN'/></Component></Directory></Directory></Directory><Feature Id='M' Level='1'><ComponentRef Id='C'/></Feature></Product></Wix>\nEOF\nsed -i \"s#\\$IN#$IN#\" s.wxs && wixl -o out.msi s.wxs",
    ),
    t(
        "nsis-zlib",
        "nsis",
        "Nsis",
        true,
        "out.exe",
        "printf 'OutFile out.exe\\nSetCompressor zlib\\nSection\\nSetOutPath $INSTDIR\\nFile /r %s\\nSectionEnd\\n' \"$IN\" > s.nsi && makensis -V1 s.nsi",
    ),
    t(
        "nsis-bzip2",
        "nsis",
        "Nsis",
        true,
        "out.exe",
        "printf 'OutFile out.exe\\nSetCompressor bzip2\\nSection\\nSetOutPath $INSTDIR\\nFile /r %s\\nSectionEnd\\n' \"$IN\" > s.nsi && makensis -V1 s.nsi",
    ),
    t(
        "nsis-lzma",
        "nsis",
        "Nsis",
        true,
        "out.exe",
        "printf 'OutFile out.exe\\nSetCompressor lzma\\nSection\\nSetOutPath $INSTDIR\\nFile /r %s\\nSectionEnd\\n' \"$IN\" > s.nsi && makensis -V1 s.nsi",
    ),
    t(
        "nsis-solid-lzma",
        "nsis",
        "Nsis",
        true,
        "out.exe",
        "printf 'OutFile out.exe\\nSetCompressor /SOLID lzma\\nSection\\nSetOutPath $INSTDIR\\nFile /r %s\\nSectionEnd\\n' \"$IN\" > s.nsi && makensis -V1 s.nsi",
    ),
    t(
        "nsis-solid-bzip2",
        "nsis",
        "Nsis",
        true,
        "out.exe",
        "printf 'OutFile out.exe\\nSetCompressor /SOLID bzip2\\nSection\\nSetOutPath $INSTDIR\\nFile /r %s\\nSectionEnd\\n' \"$IN\" > s.nsi && makensis -V1 s.nsi",
    ),
    t(
        "chm-chmcmd",
        "fp-utils",
        "Chm",
        false,
        "out.chm",
        "printf '<html><body>q</body></html>' > index.html && printf '[OPTIONS]\\nCompiled file=out.chm\\nDefault topic=index.html\\n\\n[FILES]\\nindex.html\\n%s\\n' \"$IN\" > p.hhp && chmcmd p.hhp >/dev/null",
    ),
    t(
        "makeself",
        "makeself",
        "",
        true,
        "out.run",
        "mkdir -p m && cp -r $IN m/ && makeself --quiet m out.run q true >/dev/null 2>&1",
    ),
    // Packages.
    t(
        "deb-xz",
        "dpkg",
        "Ar",
        true,
        "out.deb",
        root!(
            "mkdir -p root/DEBIAN && printf 'Package: q\\nVersion: 1\\nArchitecture: all\\nMaintainer: q <q@q>\\nDescription: q\\n' > root/DEBIAN/control && dpkg-deb -Zxz --build root out.deb >/dev/null"
        ),
    ),
    t(
        "deb-zstd",
        "dpkg",
        "Ar",
        true,
        "out.deb",
        root!(
            "mkdir -p root/DEBIAN && printf 'Package: q\\nVersion: 1\\nArchitecture: all\\nMaintainer: q <q@q>\\nDescription: q\\n' > root/DEBIAN/control && dpkg-deb -Zzstd --build root out.deb >/dev/null"
        ),
    ),
    t(
        "deb-gzip",
        "dpkg",
        "Ar",
        true,
        "out.deb",
        root!(
            "mkdir -p root/DEBIAN && printf 'Package: q\\nVersion: 1\\nArchitecture: all\\nMaintainer: q <q@q>\\nDescription: q\\n' > root/DEBIAN/control && dpkg-deb -Zgzip --build root out.deb >/dev/null"
        ),
    ),
    t("ar", "binutils", "Ar", false, "out.a", "ar rc out.a $IN"),
    t(
        "rpm",
        "rpm",
        "Rpm",
        true,
        "out.rpm",
        root!(
            "printf 'Name: q\\nVersion: 1\\nRelease: 1\\nSummary: q\\nLicense: MIT\\nBuildArch: noarch\\n%%description\\nq\\n%%install\\nmkdir -p %%{buildroot}/q && cp -r %s/root/* %%{buildroot}/q/\\n%%files\\n/q\\n' \"$PWD\" > q.spec && rpmbuild -bb --quiet --define \"_topdir $PWD/rpm\" --define '_build_id_links none' --define '__os_install_post %{nil}' q.spec >/dev/null 2>&1 && cp rpm/RPMS/noarch/*.rpm out.rpm"
        ),
    ),
    // Encodings.
    t("base64", "coreutils", "Base64", false, "out.b64", "base64 $IN > out.b64"),
    t("uuencode", "sharutils", "", false, "out.uue", "uuencode $IN $IN > out.uue"),
    t("uuencode-base64", "sharutils", "", false, "out.uue", "uuencode -m $IN $IN > out.uue"),
    t("shar", "sharutils", "", true, "out.shar", "shar -q $IN > out.shar"),
    t("xxencode", "uudeview", "", false, "out.xxe", "uuenview -x $IN > out.xxe"),
    t("yenc", "uudeview", "", false, "out.yenc", "uuenview -y $IN > out.yenc"),
    t("mime-mpack", "mpack", "", false, "out.eml", "mpack -s q -o out.eml $IN"),
    t("binhex", "macutils", "", false, "out.hqx", "binhex -d $IN > out.hqx"),
    t("ihex", "binutils", "IHex", false, "out.hex", "objcopy -I binary -O ihex $IN out.hex"),
    t("srec", "binutils", "", false, "out.srec", "objcopy -I binary -O srec $IN out.srec"),
    // File systems and disk images.
    t("iso-genisoimage", "genisoimage", "Iso", true, "out.iso", "genisoimage -quiet -o out.iso $IN"),
    t("iso-genisoimage-jr", "genisoimage", "Iso", true, "out.iso", "genisoimage -quiet -J -R -o out.iso $IN"),
    t("iso-udf-bridge", "genisoimage", "Iso", true, "out.iso", "genisoimage -quiet -udf -o out.iso $IN"),
    t("iso-xorriso", "xorriso", "Iso", true, "out.iso", "xorriso -as mkisofs -quiet -R -J -o out.iso $IN 2>/dev/null"),
    t(
        "squashfs-gzip",
        "squashfs-tools",
        "SquashFS",
        true,
        "out.sqfs",
        root!("mksquashfs root out.sqfs -quiet -no-progress -comp gzip >/dev/null"),
    ),
    t(
        "squashfs-lz4",
        "squashfs-tools",
        "SquashFS",
        true,
        "out.sqfs",
        root!("mksquashfs root out.sqfs -quiet -no-progress -comp lz4 >/dev/null"),
    ),
    t(
        "squashfs-xz",
        "squashfs-tools",
        "SquashFS",
        true,
        "out.sqfs",
        root!("mksquashfs root out.sqfs -quiet -no-progress -comp xz >/dev/null"),
    ),
    t(
        "squashfs-zstd",
        "squashfs-tools",
        "SquashFS",
        true,
        "out.sqfs",
        root!("mksquashfs root out.sqfs -quiet -no-progress -comp zstd >/dev/null"),
    ),
    t(
        "squashfs-lzo",
        "squashfs-tools",
        "SquashFS",
        true,
        "out.sqfs",
        root!("mksquashfs root out.sqfs -quiet -no-progress -comp lzo >/dev/null"),
    ),
    t(
        "squashfs-lzma",
        "squashfs-tools",
        "SquashFS",
        true,
        "out.sqfs",
        root!("mksquashfs root out.sqfs -quiet -no-progress -comp lzma >/dev/null"),
    ),
    t("wim-none", "wimtools", "wim", true, "out.wim", root!("wimlib-imagex capture root out.wim --compress=none >/dev/null")),
    t("wim-xpress", "wimtools", "wim", true, "out.wim", root!("wimlib-imagex capture root out.wim --compress=xpress >/dev/null")),
    t("wim-lzx", "wimtools", "wim", true, "out.wim", root!("wimlib-imagex capture root out.wim --compress=lzx >/dev/null")),
    t("wim-lzms", "wimtools", "wim", true, "out.wim", root!("wimlib-imagex capture root out.wim --compress=lzms >/dev/null")),
    t("wim-solid", "wimtools", "wim", true, "out.wim", root!("wimlib-imagex capture root out.wim --solid >/dev/null")),
    t("cramfs", "util-linux-extra", "CramFS", true, "out.cramfs", root!("mkfs.cramfs root out.cramfs >/dev/null")),
    t("ext2", "e2fsprogs", "Ext", true, "out.img", root!("mke2fs -q -t ext2 -d root out.img 4M")),
    t("ext4", "e2fsprogs", "Ext", true, "out.img", root!("mke2fs -q -t ext4 -d root out.img 8M")),
    t("fat", "dosfstools", "FAT", true, "out.img", "mkfs.fat -C out.img 4096 >/dev/null && mcopy -s -i out.img $IN ::"),
    t(
        "ntfs",
        "ntfs-3g",
        "NTFS",
        false,
        "out.img",
        "truncate -s 8M out.img && mkntfs -q -F -f out.img >/dev/null 2>&1 && ntfscp -q out.img $IN sample.exe",
    ),
    t(
        "mbr-fat",
        "fdisk",
        "MBR",
        true,
        "out.img",
        "truncate -s 6M out.img && printf 'start=2048, type=c\\n' | sfdisk -q out.img && mkfs.fat -C p.img 4096 >/dev/null && mcopy -s -i p.img $IN :: && dd if=p.img of=out.img bs=512 seek=2048 conv=notrunc status=none",
    ),
    t(
        "vhd-fat",
        "qemu-utils",
        "VHD",
        true,
        "out.vhd",
        "mkfs.fat -C p.img 4096 >/dev/null && mcopy -s -i p.img $IN :: && qemu-img convert -O vpc p.img out.vhd",
    ),
    t(
        "vmdk-fat",
        "qemu-utils",
        "VMDK",
        true,
        "out.vmdk",
        "mkfs.fat -C p.img 4096 >/dev/null && mcopy -s -i p.img $IN :: && qemu-img convert -O vmdk p.img out.vmdk",
    ),
    t(
        "qcow2-fat",
        "qemu-utils",
        "QCOW",
        true,
        "out.qcow2",
        "mkfs.fat -C p.img 4096 >/dev/null && mcopy -s -i p.img $IN :: && qemu-img convert -O qcow2 p.img out.qcow2",
    ),
    t(
        "vdi-fat",
        "qemu-utils",
        "VDI",
        true,
        "out.vdi",
        "mkfs.fat -C p.img 4096 >/dev/null && mcopy -s -i p.img $IN :: && qemu-img convert -O vdi p.img out.vdi",
    ),
    t(
        "vhdx-fat",
        "qemu-utils",
        "VHDX",
        true,
        "out.vhdx",
        "mkfs.fat -C p.img 4096 >/dev/null && mcopy -s -i p.img $IN :: && qemu-img convert -O vhdx p.img out.vhdx",
    ),
];

/// What Qala does not yield from a tool's output, and why. A reason
/// starting "encrypted" is checked too: the verdict must list the member
/// as encrypted.
pub const GAPS: &[(&str, &str)] = &[
    ("7z-aes", "encrypted (7zAES): listed as encrypted in the verdict; no password to try"),
    ("zip-zipcrypto", "encrypted (ZipCrypto): listed as encrypted in the verdict; no password to try"),
    ("zip-aes256", "encrypted (WinZip AES): listed as encrypted in the verdict; no password to try"),
    (
        "7z-deflate64",
        "sevenz-rust2, the 7z reader, has no Deflate64 method (7-Zip reads it; 7-Zip itself writes Deflate64 in 7z only when asked); \
         the `deflate64` crate (MIT, already read by the zip reader here) would plug in with a fork of sevenz-rust2's method table: half a day",
    ),
    (
        "7z-swap2",
        "sevenz-rust2 has no Swap2 filter (byte swapping, for 16-bit samples); the same fork adds it: two hours with Swap4",
    ),
    ("7z-swap4", "sevenz-rust2 has no Swap4 filter; as Swap2"),
    (
        "zlib-pigz",
        "a bare zlib stream (pigz -z): a two-byte header, too weak to sniff on every object; neither 7-Zip nor ClamAV reads one",
    ),
    (
        "lzop",
        "LZO: no decoder under deny.toml's licences (rust-lzo and minilzo bindings are GPL); own LZO1X and lzop framing: a day with fuzzing; \
         neither 7-Zip nor ClamAV reads .lzo",
    ),
    (
        "brotli",
        "a bare brotli stream has no magic to tell it by; `brotli-decompressor` (BSD-3/MIT) would read it where a container names it: \
         half a day; neither 7-Zip nor ClamAV reads .br",
    ),
    ("rzip", "rzip (long-range matches over bzip2): neither 7-Zip nor ClamAV reads it; no crate; own decoder about a day"),
    ("lrzip", "lrzip (rzip over LZMA, bzip2, gzip, LZO or ZPAQ): neither 7-Zip nor ClamAV reads it; no crate; several days"),
    ("zpaq", "ZPAQ (context mixing in a virtual machine): neither 7-Zip nor ClamAV reads it; no crate; about a week"),
    ("kgb", "KGB (PAQ6 context mixing, last released 2007): neither 7-Zip nor ClamAV reads it; no crate; several days"),
    ("arc", "SEA ARC (LZW and Huffman methods of the 1980s): neither 7-Zip nor ClamAV reads it; no crate; a day"),
    ("nufx", "NuFX (Apple II ShrinkIt): neither 7-Zip nor ClamAV reads it; no crate; a day"),
    (
        "dar",
        "dar's own format (catalogue at the end, per-file compression, slices): neither 7-Zip nor ClamAV reads it; no crate; two days",
    ),
    (
        "squashfs-lzo",
        "SquashFS with LZO blocks: no LZO decoder under deny.toml's licences (as lzop); the block hook is five lines once one exists",
    ),
    (
        "wim-lzms",
        "LZMS (wimlib and DISM's solid and ESD compression): 7-Zip reads it, ClamAV does not read WIM; no crate; \
         own decoder (range coder, adaptive Huffman, LZ and delta matches, x86 filter): two days with fuzzing",
    ),
    ("wim-solid", "a solid WIM resource is LZMS-compressed (as wim-lzms)"),
    (
        "cramfs",
        "file-system image, left: own read-only reader (zlib pages, inode table) about half a day; ClamAV does not read it",
    ),
];

/// Read alone, not after a program's bytes: formats with nothing to find
/// them by inside other data.
pub const APPENDED_GAPS: &[(&str, &str)] = &[
    ("tar-v7", "a Version 7 tar header has no magic: told only at the start of an object"),
    ("lzma-xz", "an LZMA-alone stream has no magic: told only at the start of an object"),
    ("lzma-alone", "an LZMA-alone stream has no magic: told only at the start of an object"),
    ("base64", "bare base64 has no marker line: inside a program's bytes it is data (7-Zip does not find it there either)"),
    ("ihex", "Intel HEX has no marker line: told only at the start of an object"),
    ("srec", "S-records have no marker line: told only at the start of an object"),
    ("ext2", "an ext superblock's magic is two bytes 1,080 bytes in: too weak to carve from other data"),
    ("ext4", "an ext superblock's magic is two bytes 1,080 bytes in: too weak to carve from other data"),
];

pub fn gap(id: &str) -> Option<&'static str> {
    GAPS.iter().find(|(g, _)| *g == id).map(|(_, why)| *why)
}

pub fn appended_gap(id: &str) -> Option<&'static str> {
    APPENDED_GAPS.iter().find(|(g, _)| *g == id).map(|(_, why)| *why)
}
