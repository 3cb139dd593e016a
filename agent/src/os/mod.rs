//! What the agent needs of its operating system, in one place: privileges,
//! who and what this machine is, the identity and stamp of a file, opening
//! a regular file without following links, filesystems that are kernel
//! views, process priorities and CPU time, files only the agent may read,
//! walking a directory path without following links and restoring a file's
//! owner, mode and times, the paths of private data never uploaded
//! ([`PRIVATE_DATA`]), the default places of the agent's own data
//! ([`dirs`]), and (Linux) fanotify ([`fanotify`]). Everything else in the
//! crate is portable; another OS is one more file family here (`unix.rs`,
//! `windows.rs`).

pub mod dirs;
#[cfg(target_os = "linux")]
pub mod fanotify;
#[cfg(target_os = "linux")]
pub mod inotify;
#[cfg(unix)]
mod unix;
#[cfg(windows)]
mod windows;

#[cfg(unix)]
pub use unix::{
    DirFd, FileStamp, IoClass, Ownership, PRIVATE_DATA, bytes_read, create_private, files_below, is_locked, is_mount_point,
    is_pseudo_fs, is_root, lower_priority, mkdir_private, open_regular, os_description, process_cpu, remove_same, resolve_root,
    walk_nofollow,
};
#[cfg(windows)]
pub use windows::{
    DirFd, FileStamp, IoClass, Ownership, PRIVATE_DATA, PRIVATE_SDDL, bytes_read, create_private, files_below, is_locked,
    is_mount_point, is_pseudo_fs, is_root, lower_priority, mkdir_private, open_regular, os_description, private_sddl,
    process_cpu, remove_same, resolve_root, sddl_of, sddl_round_trip, set_sddl,
};
