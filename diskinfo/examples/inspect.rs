//! Prints what `bogie-diskinfo` finds on a disk image: `cargo run --release -p
//! bogie-diskinfo --example inspect -- DISK`.

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: inspect DISK");
        std::process::exit(2);
    };
    match bogie_diskinfo::inspect(std::path::Path::new(&path)) {
        Err(e) => {
            eprintln!("{}: {e}", path.to_string_lossy());
            std::process::exit(1);
        }
        Ok(i) => {
            println!("container: {} ({} bytes)", i.container, i.size);
            for p in &i.partitions {
                println!(
                    "partition {} {:?} type {} start {} size {} attrs {:#x}: {}",
                    p.entry.number,
                    p.entry.name,
                    p.entry.type_guid,
                    p.entry.start,
                    p.entry.size,
                    p.entry.attributes,
                    p.fs
                );
            }
            for (at, what) in &i.mounts {
                println!("mount {at}: {what}");
            }
            println!("os: {}", i.os_summary());
            if let Some((a, how)) = &i.arch {
                println!("arch: {a} ({how})");
            }
            for (c, why) in &i.capabilities {
                println!("  {c:<20} {why}");
            }
            println!("took {:?}", i.elapsed);
        }
    }
}
