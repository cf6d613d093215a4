use clap::Parser;

use collapse_lab::cli::{execute, exit_code, Cli};

// candle allocates for every op on the CPU; mimalloc makes training ~1.6× faster here, and
// keeping large blocks for the next step spares the kernel re-zeroing their pages.
#[global_allocator]
static GLOBAL: collapse_lab::block_cache::BlockCache<mimalloc::MiMalloc> =
    collapse_lab::block_cache::BlockCache::new(mimalloc::MiMalloc);

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3; the bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // mimalloc hands pages freed for 10 ms back to the OS; a training step frees and
    // reallocates the same buffers every step, and each returned page came back through a
    // page fault that zeroes it (~600 faults a step on the BYOL bench, many of them 2 MiB
    // pages). Training keeps its peak memory anyway: never purge.
    // Safety: sets a plain integer option, before any thread but this one exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    if let Err(err) = execute(cli) {
        // Bad input: one line naming the file/flag and field. Anything else: the full chain.
        let code = exit_code(&err);
        if code == 2 {
            match err
                .chain()
                .find_map(|e| e.downcast_ref::<collapse_lab::config::InputError>())
            {
                Some(input) => collapse_lab::errln!("error: {input}"),
                None => collapse_lab::errln!("error: {err}"),
            }
        } else if code == collapse_lab::cli::EXIT_INTERRUPTED {
            collapse_lab::errln!("{err}");
        } else {
            collapse_lab::errln!("error: {err:#}");
        }
        std::process::exit(code);
    }
}
