// The kernel table of each path built into this binary, in cpu_paths.def order.
#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define QK_DECLARE_x86(name) extern const Kernels kernels_##name;
#define QK_TABLE_x86(name) &kernels_##name
#else
#define QK_DECLARE_x86(name)
#define QK_TABLE_x86(name) nullptr
#endif
#define QK_DECLARE_any(name) extern const Kernels kernels_##name;
#define QK_TABLE_any(name) &kernels_##name

namespace qk {

#define QK_PATH(name, arch, features, sources) QK_DECLARE_##arch(name)
#include "cpu_paths.def"
#undef QK_PATH

const Kernels& kernels(Isa isa) {
  static const Kernels* const tables[] = {
#define QK_PATH(name, arch, features, sources) QK_TABLE_##arch(name),
#include "cpu_paths.def"
#undef QK_PATH
  };
  return *tables[static_cast<int>(isa)];  // callers pass supported (hence built) paths only
}

}  // namespace qk
