# Cross-compiling the torch-free kernel library for aarch64 Linux (Debian: g++-aarch64-linux-gnu);
# scripts/check_kernel_lib.py builds and, under qemu-aarch64, runs its selftest with it.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
