/*
 * LD_PRELOAD shim for the whip-client process of the live GStreamer test
 * (whip-tests/tests/gstreamer_live.rs): makes libnice gather host candidates on the loopback
 * interface, and only there.
 *
 * Why: libnice never offers loopback addresses (nice_interfaces_get_local_ips(FALSE) skips
 * interfaces flagged IFF_LOOPBACK) and webrtcbin has no setting to change that, so GStreamer
 * would check from the machine's real addresses towards the gateway's 127.0.0.1 candidate; such
 * datagrams can leave through the default route instead of reaching the gateway. The test's
 * traffic must stay on 127.0.0.1, so this getifaddrs() reports every non-loopback interface as
 * down (libnice skips those) and the loopback interface without its IFF_LOOPBACK flag. Entries
 * are only re-flagged, never unlinked, because freeifaddrs() frees the list as one block.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>

int getifaddrs(struct ifaddrs **out) {
    static int (*real)(struct ifaddrs **);
    if (!real)
        real = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
    if (!real)
        return -1;
    int rc = real(out);
    if (rc != 0)
        return rc;
    for (struct ifaddrs *ifa = *out; ifa; ifa = ifa->ifa_next) {
        if (ifa->ifa_flags & IFF_LOOPBACK)
            ifa->ifa_flags &= ~IFF_LOOPBACK;
        else
            ifa->ifa_flags &= ~(IFF_UP | IFF_RUNNING);
    }
    return 0;
}
