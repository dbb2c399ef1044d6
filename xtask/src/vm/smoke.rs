//! `cargo xtask vm-smoke`: prove the runner's pieces work in a guest.
//!
//! Loads `veth` and `bonding` (with `tls` on 6.1, found through `modules.dep`;
//! decompressed from `.ko.xz` on 6.12) and runs the host's iproute2 `ip` with
//! its shared libraries to make a veth pair and a bond. Fails unless the guest
//! reports every step.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use clap::Args;

use super::initramfs::Initramfs;
use super::kernel::{self, KERNELS};
use super::qemu::{self, QemuConfig};

/// Arguments of `cargo xtask vm-smoke`.
#[derive(Debug, Args)]
pub struct SmokeArgs {
    /// Which kernel: 5.10, 6.1, 6.12, or all.
    #[arg(long, default_value = "all")]
    pub kernel: String,
}

/// Host iproute2 binary copied into the guest (busybox `ip` lacks bonding).
const HOST_IP: &str = "/usr/bin/ip";

/// Boot each selected kernel once and check modules and host binaries work.
pub fn run(args: &SmokeArgs) -> Result<()> {
    let selected: Vec<&str> = match args.kernel.as_str() {
        "all" => KERNELS.iter().map(|k| k.ver).collect(),
        one => vec![one],
    };
    for ver in selected {
        let k = kernel::fetch(&kernel::spec(ver)?)?;
        let mut tree = Initramfs::new()?;
        let modules = tree.add_modules(&k, &["veth", "bonding"])?;
        ensure!(
            Path::new(HOST_IP).is_file(),
            "{HOST_IP} not found: apt-get install iproute2"
        );
        tree.add_binary(Path::new(HOST_IP), "/sbin/ip")?;
        let mut init = String::from(
            "#!/bin/sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n\
             mount -t proc proc /proc\nmount -t sysfs sysfs /sys\n",
        );
        init.push_str(super::SHELL_HELPERS);
        init.push_str("pf_begin insmod\n");
        for m in &modules {
            let opts = if m.ends_with("/bonding.ko") {
                " max_bonds=0"
            } else {
                ""
            };
            init.push_str(&format!("insmod {m}{opts} && echo loaded {m}\n"));
        }
        init.push_str(
            "pf_end insmod\npf_begin net\n\
             /sbin/ip link add v0 type veth peer name v1 && echo veth=ok\n\
             /sbin/ip link add bond0 type bond mode balance-xor && echo bond=ok\n\
             /sbin/ip -o link show | cut -d' ' -f2\npf_end net\npoweroff -f\n",
        );
        tree.set_init(&init);
        let image = super::vm_dir()
            .join("images")
            .join(format!("smoke-{ver}.cpio"));
        tree.write(&image)?;
        let out = qemu::run(&k, &image, &QemuConfig::new(&format!("smoke-{ver}")))?;
        let section = |name: &str| {
            out.sections.present.get(name).with_context(|| {
                format!(
                    "no {name} section; see {}; console ends:\n{}",
                    out.log.display(),
                    out.tail(20)
                )
            })
        };
        let loaded = section("insmod")?;
        let net = section("net")?;
        for m in &modules {
            ensure!(
                loaded.contains(&format!("loaded {m}")),
                "{ver}: {m} did not load; see {}",
                out.log.display()
            );
        }
        ensure!(
            net.contains("veth=ok") && net.contains("bond=ok"),
            "{ver}: ip could not make veth/bond: {net}; see {}",
            out.log.display()
        );
        eprintln!(
            "vm-smoke: {ver} ok in {:.1} s: modules {}",
            out.elapsed.as_secs_f64(),
            modules
                .iter()
                .map(|m| m.rsplit('/').next().unwrap_or(m))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
