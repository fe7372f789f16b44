//! What kind of network device an interface is, to choose its ingress hook, and the index
//! the kernel numbers it by (what the datapath sees of a packet's interface).

use std::io;

use crate::config::InterfaceName;

// `libc::Ioctl`: the request's type differs between glibc (unsigned long) and musl (int).
const SIOCETHTOOL: libc::Ioctl = 0x8946;
const SIOCGIFHWADDR: libc::Ioctl = 0x8927;
/// `ARPHRD_ETHER` (`linux/if_arp.h`): a device whose frames start with an Ethernet header.
pub const ARPHRD_ETHER: u16 = 1;
const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// `struct ethtool_drvinfo` (linux/ethtool.h).
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ifreq` with the `ifr_data` member.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut DrvInfo,
    pad: [u8; 16],
}

/// `iface`'s name as an `ifr_name`. Interface names are validated to 1-15 bytes, so it keeps
/// its NUL.
fn if_name(iface: &InterfaceName) -> [u8; libc::IFNAMSIZ] {
    let mut out = [0; libc::IFNAMSIZ];
    let name = iface.as_str().as_bytes();
    out[..name.len()].copy_from_slice(name);
    out
}

/// Runs the interface ioctl `request` on `req` through a datagram socket of this process's
/// network namespace.
///
/// # Safety
/// `req` must point at an `ifreq` of the shape `request` reads and writes, and whatever it
/// points to must be live.
#[expect(unsafe_code, reason = "interface ioctls have no safe wrapper")]
unsafe fn interface_ioctl(request: libc::Ioctl, req: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the caller's promise about `req`.
    let rc = unsafe { libc::ioctl(fd, request, req) };
    let err = io::Error::last_os_error();
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    if rc < 0 { Err(err) } else { Ok(()) }
}

/// The driver behind `iface` in this process's network namespace, as `ethtool -i` names it
/// (`veth`, `virtio_net`, `mlx5_core`, ...). Asked of the kernel through a socket rather than
/// read from /sys, whose view belongs to the namespace it was mounted in.
#[expect(unsafe_code, reason = "calls interface_ioctl")]
pub fn driver(iface: &InterfaceName) -> io::Result<String> {
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &raw mut info,
        pad: [0; 16],
    };
    req.name = if_name(iface);
    // SAFETY: `req` is an ifreq whose data points at a live ethtool_drvinfo; the kernel writes
    // at most that struct.
    unsafe { interface_ioctl(SIOCETHTOOL, (&raw mut req).cast())? };
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// `struct ifreq` with the `ifr_hwaddr` member (a `struct sockaddr`).
#[repr(C)]
struct IfReqHwAddr {
    name: [u8; libc::IFNAMSIZ],
    family: u16,
    data: [u8; 14],
    pad: [u8; 8],
}

/// The link type of `iface` (`ARPHRD_*`: 1 Ethernet, 65534 none, as for tun and `WireGuard`,
/// 778 GRE, ...), from `SIOCGIFHWADDR` in this process's network namespace.
#[expect(unsafe_code, reason = "calls interface_ioctl")]
pub fn link_type(iface: &InterfaceName) -> io::Result<u16> {
    let mut req = IfReqHwAddr {
        name: [0; libc::IFNAMSIZ],
        family: 0,
        data: [0; 14],
        pad: [0; 8],
    };
    req.name = if_name(iface);
    // SAFETY: `req` is an ifreq; the kernel writes its hardware address member.
    unsafe { interface_ioctl(SIOCGIFHWADDR, (&raw mut req).cast())? };
    Ok(req.family)
}

/// The interface index of `iface` in this process's network namespace.
#[expect(unsafe_code, reason = "if_nametoindex(3) has no safe wrapper")]
pub fn index(iface: &InterfaceName) -> io::Result<u32> {
    let name = if_name(iface);
    // SAFETY: a NUL-terminated name (validated to at most 15 bytes) that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr().cast()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

/// The name of the interface numbered `index` in this process's network namespace.
#[expect(unsafe_code, reason = "if_indextoname(3) has no safe wrapper")]
pub fn name_of(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IFNAMSIZ];
    // SAFETY: `buf` has the IFNAMSIZ bytes the call may write.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_no_driver_info_or_says_so() {
        // `lo` answers EOPNOTSUPP on most kernels; either way the call must not misbehave.
        let lo = "lo".parse().expect("valid name");
        if let Ok(d) = driver(&lo) {
            assert!(!d.contains('\0'));
        }
        let missing = "bnd-no-such-if".parse().expect("valid name");
        assert!(driver(&missing).is_err());
        assert!(link_type(&missing).is_err());
        // Loopback's link type is ARPHRD_LOOPBACK (772), not Ethernet.
        assert_eq!(link_type(&lo).expect("lo exists"), 772);
        // Loopback is the first device of every network namespace.
        assert_eq!(index(&lo).expect("lo exists"), 1);
        assert_eq!(name_of(1).as_deref(), Some("lo"));
        assert!(index(&missing).is_err());
    }
}
