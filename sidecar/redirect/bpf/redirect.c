// SPDX-License-Identifier: GPL-2.0
/*
 * trustmesh eBPF traffic capture (outbound TCP).
 *
 * Attached to the pod's cgroup v2:
 *   cgroup/connect4, cgroup/connect6  rewrite an app's TCP connect() to the
 *       sidecar's outbound port on loopback and remember the original
 *       destination under the socket cookie;
 *   sockops                           once the app's connection is up, re-key
 *       that record by the app's local (address, port), which is what the
 *       sidecar sees as its peer, and forget it when that connection closes;
 *   cgroup/getsockopt                 answer SO_ORIGINAL_DST (SOL_IP) and
 *       IP6T_SO_ORIGINAL_DST (SOL_IPV6) on the sidecar's accepted socket from
 *       that record, exactly as netfilter's REDIRECT would.
 *
 * Connections from the proxy uid or gid, to loopback, to excluded ports or
 * CIDRs, or outside the captured CIDRs are left alone. Everything the
 * programs need is in maps that `trustmesh redirect apply --mode ebpf` fills
 * before it attaches them. GPL because the socket-cookie and uid helpers
 * are GPL-only.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOL_IP 0
#define SOL_IPV6 41
#define SO_ORIGINAL_DST 80 /* also IP6T_SO_ORIGINAL_DST */
#define PAGE_SIZE_BYTES 4096
#define barrier() asm volatile("" ::: "memory")

char LICENSE[] SEC("license") = "GPL";

struct config {
	__u32 proxy_uid;
	__u32 proxy_gid;
	__u32 outbound_port;	/* host byte order; 0 means "not configured" */
	__u32 capture_all;	/* 1: every CIDR is captured, 0: only cidr*_include */
	__u32 ipv6_drop;	/* 1: refuse IPv6 connects instead of capturing */
};

struct orig_dst {
	__u32 addr[4];		/* network byte order; IPv4 in addr[0] */
	__u16 port;		/* network byte order */
	__u16 family;
};

struct peer_key {
	__u32 addr[4];		/* the app's local address, network byte order */
	__u32 port;		/* the app's local port, host byte order */
	__u32 family;
};

struct lpm4 {
	__u32 prefixlen;
	__u32 addr;
};

struct lpm6 {
	__u32 prefixlen;
	__u32 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} tm_config SEC(".maps");

/* Which build of this file is loaded (first 8 bytes of its SHA-256), set by
 * `apply` so that a later `apply` knows whether it may just rewrite the maps. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tm_build SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);	/* host byte order */
	__type(value, __u8);
} tm_excl_ports SEC(".maps");

#define LPM_MAP(name, keytype)                          \
	struct {                                        \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);    \
		__uint(max_entries, 256);               \
		__uint(map_flags, BPF_F_NO_PREALLOC);   \
		__type(key, keytype);                   \
		__type(value, __u8);                    \
	} name SEC(".maps")

LPM_MAP(tm_excl4, struct lpm4);
LPM_MAP(tm_incl4, struct lpm4);
LPM_MAP(tm_excl6, struct lpm6);
LPM_MAP(tm_incl6, struct lpm6);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct orig_dst);
} tm_by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct peer_key);
	__type(value, struct orig_dst);
} tm_by_peer SEC(".maps");

static __always_inline int is_v4_mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

static __always_inline struct config *load_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&tm_config, &zero);
}

static __always_inline int is_proxy(const struct config *cfg)
{
	__u64 ug = bpf_get_current_uid_gid();

	return (__u32)ug == cfg->proxy_uid || (__u32)(ug >> 32) == cfg->proxy_gid;
}

/* 1 when an IPv4 destination (network order) and port (host order) must be captured. */
static __always_inline int capture_v4(const struct config *cfg, __u32 addr, __u16 port)
{
	struct lpm4 key = { .prefixlen = 32, .addr = addr };

	if ((bpf_ntohl(addr) >> 24) == 127)
		return 0;
	if (bpf_map_lookup_elem(&tm_excl_ports, &port))
		return 0;
	if (bpf_map_lookup_elem(&tm_excl4, &key))
		return 0;
	if (!cfg->capture_all && !bpf_map_lookup_elem(&tm_incl4, &key))
		return 0;
	return 1;
}

static __always_inline int capture_v6(const struct config *cfg, const __u32 *addr, __u16 port)
{
	struct lpm6 key = { .prefixlen = 128 };

	if (addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == bpf_htonl(1))
		return 0;
	if (bpf_map_lookup_elem(&tm_excl_ports, &port))
		return 0;
	key.addr[0] = addr[0];
	key.addr[1] = addr[1];
	key.addr[2] = addr[2];
	key.addr[3] = addr[3];
	if (bpf_map_lookup_elem(&tm_excl6, &key))
		return 0;
	if (!cfg->capture_all && !bpf_map_lookup_elem(&tm_incl6, &key))
		return 0;
	return 1;
}

SEC("cgroup/connect4")
int trustmesh_connect4(struct bpf_sock_addr *ctx)
{
	struct config *cfg = load_config();
	struct orig_dst orig = {};
	__u64 cookie;

	if (!cfg || cfg->outbound_port == 0)
		return 0; /* loaded but never configured: fail closed */
	if (ctx->type != SOCK_STREAM || is_proxy(cfg))
		return 1;
	if (!capture_v4(cfg, ctx->user_ip4, bpf_ntohs((__u16)ctx->user_port)))
		return 1;

	orig.family = AF_INET;
	orig.addr[0] = ctx->user_ip4;
	orig.port = (__u16)ctx->user_port;
	cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&tm_by_cookie, &cookie, &orig, BPF_ANY))
		return 0;
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons((__u16)cfg->outbound_port);
	return 1;
}

SEC("cgroup/connect6")
int trustmesh_connect6(struct bpf_sock_addr *ctx)
{
	struct config *cfg = load_config();
	struct orig_dst orig = {};
	__u32 addr[4];
	__u16 port;
	__u64 cookie;

	if (!cfg || cfg->outbound_port == 0)
		return 0;
	if (ctx->type != SOCK_STREAM || is_proxy(cfg))
		return 1;
	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
	port = bpf_ntohs((__u16)ctx->user_port);

	if (is_v4_mapped(addr)) {
		/* An IPv6 socket reaching an IPv4 peer: treat it as IPv4. */
		if (!capture_v4(cfg, addr[3], port))
			return 1;
		orig.family = AF_INET;
		orig.addr[0] = addr[3];
		orig.port = (__u16)ctx->user_port;
		cookie = bpf_get_socket_cookie(ctx);
		if (bpf_map_update_elem(&tm_by_cookie, &cookie, &orig, BPF_ANY))
			return 0;
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons((__u16)cfg->outbound_port);
		return 1;
	}
	if (!capture_v6(cfg, addr, port))
		return 1;
	if (cfg->ipv6_drop)
		return 0; /* EPERM: IPv6 never goes around the sidecar */

	orig.family = AF_INET6;
	orig.addr[0] = addr[0];
	orig.addr[1] = addr[1];
	orig.addr[2] = addr[2];
	orig.addr[3] = addr[3];
	orig.port = (__u16)ctx->user_port;
	cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&tm_by_cookie, &cookie, &orig, BPF_ANY))
		return 0;
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = 0;
	ctx->user_ip6[3] = bpf_htonl(1);
	ctx->user_port = bpf_htons((__u16)cfg->outbound_port);
	return 1;
}

static __always_inline void peer_of(struct bpf_sock_ops *skops, struct peer_key *key)
{
	key->port = skops->local_port;
	if (skops->family == AF_INET) {
		key->family = AF_INET;
		key->addr[0] = skops->local_ip4;
		return;
	}
	key->addr[0] = skops->local_ip6[0];
	key->addr[1] = skops->local_ip6[1];
	key->addr[2] = skops->local_ip6[2];
	key->addr[3] = skops->local_ip6[3];
	key->family = AF_INET6;
	if (is_v4_mapped(key->addr)) {
		key->family = AF_INET;
		key->addr[0] = key->addr[3];
		key->addr[2] = 0;
		key->addr[3] = 0;
	}
}

SEC("sockops")
int trustmesh_sockops(struct bpf_sock_ops *skops)
{
	struct peer_key key = {};
	struct orig_dst *orig;
	__u64 cookie;

	if (skops->op == BPF_SOCK_OPS_STATE_CB) {
		/* The app's captured connection is closing: forget its record. */
		if (skops->args[1] == BPF_TCP_CLOSE) {
			peer_of(skops, &key);
			bpf_map_delete_elem(&tm_by_peer, &key);
		}
		return 1;
	}
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	orig = bpf_map_lookup_elem(&tm_by_cookie, &cookie);
	if (!orig)
		return 1;
	peer_of(skops, &key);
	bpf_map_update_elem(&tm_by_peer, &key, orig, BPF_ANY);
	bpf_map_delete_elem(&tm_by_cookie, &cookie);
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
	return 1;
}

SEC("cgroup/getsockopt")
int trustmesh_getsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct peer_key key = {};
	struct orig_dst *orig;
	__u8 *optval = ctx->optval;
	__u8 *end = ctx->optval_end;

	if (ctx->optname != SO_ORIGINAL_DST || (ctx->level != SOL_IP && ctx->level != SOL_IPV6))
		goto pass;
	if (!sk)
		goto pass;

	key.port = bpf_ntohs(sk->dst_port);
	if (sk->family == AF_INET) {
		key.family = AF_INET;
		key.addr[0] = sk->dst_ip4;
	} else {
		key.addr[0] = sk->dst_ip6[0];
		key.addr[1] = sk->dst_ip6[1];
		key.addr[2] = sk->dst_ip6[2];
		key.addr[3] = sk->dst_ip6[3];
		key.family = AF_INET6;
		if (is_v4_mapped(key.addr)) {
			key.family = AF_INET;
			key.addr[0] = key.addr[3];
			key.addr[2] = 0;
			key.addr[3] = 0;
		}
	}
	orig = bpf_map_lookup_elem(&tm_by_peer, &key);
	if (!orig)
		goto pass;

	if (ctx->level == SOL_IP && orig->family == AF_INET) {
		/* struct sockaddr_in */
		if (optval + 16 > end)
			goto pass;
		__builtin_memset(optval, 0, 16);
		*(__u16 *)optval = AF_INET;
		*(__u16 *)(optval + 2) = orig->port;
		*(__u32 *)(optval + 4) = orig->addr[0];
		ctx->optlen = 16;
		barrier(); /* two 4-byte stores: the verifier refuses a merged 8-byte one */
		ctx->retval = 0;
		return 1;
	}
	if (ctx->level == SOL_IPV6 && orig->family == AF_INET6) {
		/* struct sockaddr_in6 */
		if (optval + 28 > end)
			goto pass;
		__builtin_memset(optval, 0, 28);
		*(__u16 *)optval = AF_INET6;
		*(__u16 *)(optval + 2) = orig->port;
		*(__u32 *)(optval + 8) = orig->addr[0];
		*(__u32 *)(optval + 12) = orig->addr[1];
		*(__u32 *)(optval + 16) = orig->addr[2];
		*(__u32 *)(optval + 20) = orig->addr[3];
		ctx->optlen = 28;
		barrier(); /* two 4-byte stores: the verifier refuses a merged 8-byte one */
		ctx->retval = 0;
		return 1;
	}
pass:
	/* Leave every other option exactly as the kernel answered it. */
	if (ctx->optlen > PAGE_SIZE_BYTES)
		ctx->optlen = 0;
	return 1;
}
