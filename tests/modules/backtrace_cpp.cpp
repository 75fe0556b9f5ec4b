/* A C++ module that crashes inside a template's static member, for the backtrace tests
 * (crates/kmodlike/tests/backtrace.rs): the frame's name must come back demangled. Built with
 * the C compiler driver (no C++ runtime is needed: no exceptions, no standard library). */
extern "C" {
#include "module_interface.h"
}
#include <stdint.h>

namespace vendor {
template <typename T> struct Decoder {
    __attribute__((noinline, noipa)) static void parse(T *volatile at, T value) {
        *at = value;
        __asm__ volatile("" ::: "memory");
    }
};
} // namespace vendor

extern "C" {
uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *) { return 0; }
void module_fini(void) {}

/* SIGSEGV in vendor::Decoder<int>::parse(int*, int) <- crash_cpp. */
void crash_cpp(void) {
    vendor::Decoder<int>::parse(nullptr, 7);
    __asm__ volatile("" ::: "memory");
}
}
