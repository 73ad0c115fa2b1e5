/*
 * Stand-in for libgupnp-igd-1.0.so.4, loaded (via LD_LIBRARY_PATH) only into the whip-client
 * process of the live GStreamer test (whip-tests/tests/gstreamer_live.rs).
 *
 * Why: Debian bookworm's simple-whip-client links libsoup 2.4, while its ICE stack (libnice ->
 * libgupnp-igd -> gupnp -> gssdp) links libsoup 3; libsoup 3 aborts at load time when it finds
 * libsoup 2 symbols in the process ("libsoup2 symbols detected"), so the packaged client cannot
 * start at all. libnice uses gupnp-igd only for UPnP port mappings and treats a NULL from
 * gupnp_simple_igd_thread_new() as "UPnP unavailable" (it logs and gathers without it), so these
 * four symbols, without any libsoup behind them, are all it needs. Nothing here is ever called
 * with a non-NULL agent.
 */

void *gupnp_simple_igd_thread_new(void) { return 0; }

/* G_TYPE_OBJECT (20 << 2): only reached through type checks on a NULL agent. */
unsigned long gupnp_simple_igd_get_type(void) { return 80; }

void gupnp_simple_igd_add_port(void) {}

void gupnp_simple_igd_remove_port_local(void) {}
