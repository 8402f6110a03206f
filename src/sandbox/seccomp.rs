//! The task's seccomp filter: the few system calls that would let a script hand privileges or
//! secrets to someone outside its task, which namespaces, landlock and dropped capabilities do not
//! stop. Everything else is allowed: the filter is a short deny-list, not an allow-list.
//!
//! - **Set-user-ID and set-group-ID modes.** A task's uid is grit's own uid (its user namespace
//!   maps the uid to itself), so a file the task creates in a writable place (a `read_write` path,
//!   its scratch directory) belongs to grit's user, and the task, as the file's owner, could make
//!   it set-user-ID. Anyone who can reach that file would then run as grit's user, or as root if
//!   grit runs as root. As systemd's `RestrictSUIDSGID=` does, `chmod`, `fchmod`, `fchmodat`,
//!   `fchmodat2`, and file or directory creation (`open`/`openat`/`creat` with `O_CREAT` or
//!   `O_TMPFILE`, `mkdir`, `mknod`) fail with `EPERM` when the mode has `S_ISUID` or `S_ISGID`.
//!   `openat2` takes its mode in memory a filter cannot read, so it fails with `ENOSYS`, which C
//!   libraries answer by falling back to `openat`.
//! - **Kernel keyrings** (`add_key`, `keyctl`, `request_key`: `ENOSYS`). Keyrings are not
//!   namespaced: a task would inherit grit's session keyring, read the keys in it, and leave keys
//!   there for other tasks. Docker's default profile blocks them for the same reason.
//! - **io_uring** (`ENOSYS`): its operations (an `openat` with a mode among them) do not pass
//!   through this filter. Programs fall back to ordinary system calls.
//!
//! The filter covers the native ABI and, on x86_64, the i386 one (a 32-bit program calls `chmod`
//! under another number); x32 calls and, on aarch64, 32-bit calls fail with `ENOSYS`. The zygote
//! installs it on itself once ([`install`]), so every task's init is born under it and passes it
//! on to the script: a filter is never lifted, and init's own set-up calls none of these.

use std::sync::OnceLock;

use libc::sock_filter;

/// `S_ISUID | S_ISGID`.
const PRIVILEGE_BITS: u32 = 0o6000;
/// `O_CREAT | __O_TMPFILE` (the same values on x86_64 and aarch64): the flags under which an
/// open uses its mode.
const CREATING: u32 = 0o100 | 0o20000000;

/// What the filter does with one system call.
#[derive(Clone, Copy)]
enum Rule {
    /// Fails with this errno.
    Refuse(i32),
    /// Fails with `EPERM` when argument `mode` has a privilege bit.
    Mode { mode: u32 },
    /// Fails with `EPERM` when argument `flags` creates a file and argument `mode` has a
    /// privilege bit.
    CreateMode { flags: u32, mode: u32 },
}

/// The rules of one ABI: (system call number, rule).
type Rules = &'static [(u32, Rule)];

#[cfg(target_arch = "x86_64")]
mod abi {
    use super::Rule::{self, CreateMode, Mode, Refuse};
    use libc::ENOSYS;

    pub const NATIVE: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    pub const COMPAT: Option<u32> = Some(0x4000_0003); // AUDIT_ARCH_I386
    /// x32 calls carry this bit on the x86_64 audit arch.
    pub const NATIVE_BITS_REFUSED: Option<u32> = Some(0x4000_0000);

    pub const NATIVE_RULES: &[(u32, Rule)] = &[
        (90, Mode { mode: 1 }),                  // chmod
        (91, Mode { mode: 1 }),                  // fchmod
        (268, Mode { mode: 2 }),                 // fchmodat
        (452, Mode { mode: 2 }),                 // fchmodat2
        (2, CreateMode { flags: 1, mode: 2 }),   // open
        (257, CreateMode { flags: 2, mode: 3 }), // openat
        (85, Mode { mode: 1 }),                  // creat
        (83, Mode { mode: 1 }),                  // mkdir
        (258, Mode { mode: 2 }),                 // mkdirat
        (133, Mode { mode: 1 }),                 // mknod
        (259, Mode { mode: 2 }),                 // mknodat
        (437, Refuse(ENOSYS)),                   // openat2
        (248, Refuse(ENOSYS)),                   // add_key
        (249, Refuse(ENOSYS)),                   // request_key
        (250, Refuse(ENOSYS)),                   // keyctl
        (425, Refuse(ENOSYS)),                   // io_uring_setup
        (426, Refuse(ENOSYS)),                   // io_uring_enter
        (427, Refuse(ENOSYS)),                   // io_uring_register
    ];
    /// i386 numbers.
    pub const COMPAT_RULES: &[(u32, Rule)] = &[
        (15, Mode { mode: 1 }),                  // chmod
        (94, Mode { mode: 1 }),                  // fchmod
        (306, Mode { mode: 2 }),                 // fchmodat
        (452, Mode { mode: 2 }),                 // fchmodat2
        (5, CreateMode { flags: 1, mode: 2 }),   // open
        (295, CreateMode { flags: 2, mode: 3 }), // openat
        (8, Mode { mode: 1 }),                   // creat
        (39, Mode { mode: 1 }),                  // mkdir
        (296, Mode { mode: 2 }),                 // mkdirat
        (14, Mode { mode: 1 }),                  // mknod
        (297, Mode { mode: 2 }),                 // mknodat
        (437, Refuse(ENOSYS)),                   // openat2
        (286, Refuse(ENOSYS)),                   // add_key
        (287, Refuse(ENOSYS)),                   // request_key
        (288, Refuse(ENOSYS)),                   // keyctl
        (425, Refuse(ENOSYS)),                   // io_uring_setup
        (426, Refuse(ENOSYS)),                   // io_uring_enter
        (427, Refuse(ENOSYS)),                   // io_uring_register
    ];
    /// Whether every compat call is refused (no rules for that ABI).
    pub const COMPAT_ALL: bool = false;
}

#[cfg(target_arch = "aarch64")]
mod abi {
    use super::Rule::{self, CreateMode, Mode, Refuse};
    use libc::ENOSYS;

    pub const NATIVE: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    pub const COMPAT: Option<u32> = Some(0x4000_0028); // AUDIT_ARCH_ARM
    pub const NATIVE_BITS_REFUSED: Option<u32> = None;

    /// The generic table: no `chmod`, `open`, `creat`, `mkdir` or `mknod`.
    pub const NATIVE_RULES: &[(u32, Rule)] = &[
        (52, Mode { mode: 1 }),                 // fchmod
        (53, Mode { mode: 2 }),                 // fchmodat
        (452, Mode { mode: 2 }),                // fchmodat2
        (56, CreateMode { flags: 2, mode: 3 }), // openat
        (34, Mode { mode: 2 }),                 // mkdirat
        (33, Mode { mode: 2 }),                 // mknodat
        (437, Refuse(ENOSYS)),                  // openat2
        (217, Refuse(ENOSYS)),                  // add_key
        (218, Refuse(ENOSYS)),                  // request_key
        (219, Refuse(ENOSYS)),                  // keyctl
        (425, Refuse(ENOSYS)),                  // io_uring_setup
        (426, Refuse(ENOSYS)),                  // io_uring_enter
        (427, Refuse(ENOSYS)),                  // io_uring_register
    ];
    pub const COMPAT_RULES: &[(u32, Rule)] = &[];
    /// 32-bit ARM programs: every call refused.
    pub const COMPAT_ALL: bool = true;
}

/// The filter program for this machine's ABIs, built on first use; `None` on an architecture
/// grit has no system call table for (the sandbox then runs without it, and says so).
pub(crate) fn program() -> Option<&'static [sock_filter]> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        static PROGRAM: OnceLock<Vec<sock_filter>> = OnceLock::new();
        Some(PROGRAM.get_or_init(build).as_slice())
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        None
    }
}

/// Put the filter on this process (and so on everything it starts). Needs `CAP_SYS_ADMIN` in its
/// user namespace or `no_new_privs`; the zygote has the former. A no-op on an architecture with
/// no table (see [`program`]).
pub(crate) fn install() -> std::io::Result<()> {
    let Some(filter) = program() else {
        return Ok(());
    };
    let program = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr().cast_mut(),
    };
    // SPEC_ALLOW: the filter is not there to isolate secrets inside the process, so the
    // speculative store bypass mitigation that kernels before 5.16 switch on with any filter
    // would only slow the scripts down. Kernels before 4.17 lack the flag (EINVAL).
    for flags in [libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW, 0] {
        // SAFETY: seccomp(SET_MODE_FILTER) with a valid program that outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &program as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) || flags == 0 {
            return Err(e);
        }
    }
    Ok(())
}

/// Offset of `seccomp_data.nr`, `.arch` and the low 32 bits of `.args[i]` (little-endian).
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg(i: u32) -> u32 {
    16 + 8 * i
}

fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

fn load(offset: u32) -> sock_filter {
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

fn ret(value: u32) -> sock_filter {
    stmt(libc::BPF_RET | libc::BPF_K, value)
}

fn refuse(errno: i32) -> sock_filter {
    ret(libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA))
}

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

/// A jump offset; every block here is a few instructions, so it always fits.
fn offset(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// One ABI's part: load the call number, one block per rule, allow the rest.
fn abi_section(rules: Rules, refused_bits: Option<u32>) -> Vec<sock_filter> {
    let mut out = vec![load(NR)];
    if let Some(bits) = refused_bits {
        out.push(jump(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            bits,
            0,
            1,
        ));
        out.push(refuse(libc::ENOSYS));
    }
    for &(nr, rule) in rules {
        let body = match rule {
            Rule::Refuse(errno) => vec![refuse(errno)],
            Rule::Mode { mode } => vec![
                load(arg(mode)),
                jump(
                    libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
                    PRIVILEGE_BITS,
                    0,
                    1,
                ),
                refuse(libc::EPERM),
                ret(ALLOW),
            ],
            Rule::CreateMode { flags, mode } => vec![
                load(arg(flags)),
                jump(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, CREATING, 0, 3),
                load(arg(mode)),
                jump(
                    libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
                    PRIVILEGE_BITS,
                    0,
                    1,
                ),
                refuse(libc::EPERM),
                ret(ALLOW),
            ],
        };
        out.push(jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            nr,
            0,
            offset(body.len()),
        ));
        out.extend(body);
    }
    out.push(ret(ALLOW));
    out
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn build() -> Vec<sock_filter> {
    let native = abi_section(abi::NATIVE_RULES, abi::NATIVE_BITS_REFUSED);
    let compat = if abi::COMPAT_ALL {
        vec![refuse(libc::ENOSYS)]
    } else {
        abi_section(abi::COMPAT_RULES, None)
    };
    let mut out = vec![load(ARCH)];
    out.push(jump(
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        abi::NATIVE,
        0,
        offset(native.len()),
    ));
    out.extend(native);
    if let Some(compat_arch) = abi::COMPAT {
        out.push(jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            compat_arch,
            0,
            offset(compat.len()),
        ));
        out.extend(compat);
    }
    // An ABI this kernel should not have.
    out.push(refuse(libc::ENOSYS));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the classic BPF program on one `seccomp_data` (enough of the interpreter for the
    /// instructions `build` emits).
    fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u32; 4]) -> u32 {
        let word = |offset: u32| match offset {
            NR => nr,
            ARCH => arch,
            o => args[((o - 16) / 8) as usize],
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let insn = program[pc];
            let code = u32::from(insn.code);
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                acc = word(insn.k);
                pc += 1;
            } else if code == libc::BPF_RET | libc::BPF_K {
                return insn.k;
            } else {
                let taken = if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K {
                    acc == insn.k
                } else if code == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K {
                    acc & insn.k != 0
                } else {
                    panic!("unexpected instruction {code:#x}");
                };
                pc += 1 + usize::from(if taken { insn.jt } else { insn.jf });
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_program_refuses_privilege_bits_keyrings_and_io_uring_and_allows_the_rest() {
        let p = program().unwrap();
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let x86_64 = abi::NATIVE;
        let i386 = 0x4000_0003;
        // chmod(path, 04755) and (path, 0755)
        assert_eq!(run(p, x86_64, 90, [0, 0o4755, 0, 0]), eperm);
        assert_eq!(run(p, x86_64, 90, [0, 0o755, 0, 0]), ALLOW);
        assert_eq!(run(p, x86_64, 91, [3, 0o2755, 0, 0]), eperm);
        assert_eq!(run(p, x86_64, 268, [0, 0, 0o6755, 0]), eperm);
        assert_eq!(run(p, x86_64, 452, [0, 0, 0o4700, 0]), eperm);
        // openat(dirfd, path, O_CREAT|O_WRONLY, 04755): refused; without O_CREAT the mode
        // argument is meaningless and ignored.
        assert_eq!(run(p, x86_64, 257, [0, 0, 0o101, 0o4755]), eperm);
        assert_eq!(run(p, x86_64, 257, [0, 0, 0o1, 0o4755]), ALLOW);
        assert_eq!(run(p, x86_64, 257, [0, 0, 0o101, 0o644]), ALLOW);
        assert_eq!(run(p, x86_64, 2, [0, 0o20200000, 0o4755, 0]), eperm); // O_TMPFILE
        assert_eq!(run(p, x86_64, 83, [0, 0o2775, 0, 0]), eperm); // mkdir
        assert_eq!(run(p, x86_64, 437, [0; 4]), enosys); // openat2
        assert_eq!(run(p, x86_64, 250, [0; 4]), enosys); // keyctl
        assert_eq!(run(p, x86_64, 425, [0; 4]), enosys); // io_uring_setup
        assert_eq!(run(p, x86_64, 0x4000_005a, [0, 0o755, 0, 0]), enosys); // x32 chmod
        assert_eq!(run(p, x86_64, 0, [0; 4]), ALLOW); // read
        assert_eq!(run(p, x86_64, 59, [0; 4]), ALLOW); // execve
        // The same calls from a 32-bit program.
        assert_eq!(run(p, i386, 15, [0, 0o4755, 0, 0]), eperm);
        assert_eq!(run(p, i386, 15, [0, 0o755, 0, 0]), ALLOW);
        assert_eq!(run(p, i386, 288, [0; 4]), enosys);
        assert_eq!(run(p, i386, 90, [0, 0o4755, 0, 0]), ALLOW); // i386 90 is mmap
        assert_eq!(run(p, 0x1234, 0, [0; 4]), enosys);
    }
}
