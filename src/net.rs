//! Network addresses that the configuration and the HTTP layer both need: which proxies are
//! trusted to name the client in `X-Forwarded-For`. Below both `config` and `http`.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// Proxies whose `X-Forwarded-For` header is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses addresses and CIDR blocks (`10.0.0.0/8`, `::1`).
    pub fn parse(list: &[String]) -> Result<TrustedProxies, String> {
        let mut out = Vec::new();
        for item in list
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (addr, bits) = match item.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (item, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("trusted_proxies: '{item}' is not an address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("trusted_proxies: bad prefix in '{item}'"))?,
                None => max,
            };
            out.push((ip, bits));
        }
        Ok(TrustedProxies(out))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let bits_of = |ip: IpAddr| -> (u128, u8) {
            match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => (u128::from(u32::from(v4)) << 96, 32),
                    None => (u128::from(v6), 128),
                },
            }
        };
        let (value, width) = bits_of(ip);
        self.0.iter().any(|(net, prefix)| {
            // Both kinds sit at the top of the 128 bits, so a prefix counts from the top either way.
            let (net_value, net_width) = bits_of(*net);
            let prefix = u32::from(*prefix).min(u32::from(net_width));
            net_width == width && (prefix == 0 || (value ^ net_value) >> (128 - prefix) == 0)
        })
    }

    /// Whether a trusted proxy (the peer) says the client reached it over HTTPS
    /// (`X-Forwarded-Proto: https`).
    pub(crate) fn says_https(&self, peer: SocketAddr, headers: &HeaderMap) -> bool {
        self.contains(peer.ip())
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
    }

    /// The client a request comes from: behind a trusted proxy, the right-most address of
    /// `X-Forwarded-For` that is not itself a trusted proxy; otherwise the peer. Entries may carry
    /// a port (`203.0.113.7:5000`, `[2001:db8::1]:5000`); an entry that cannot be read before
    /// the client is found makes the peer count (fail closed: nothing left of it is believed).
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if self.0.is_empty() || !self.contains(peer.ip()) {
            return peer;
        }
        let mut hops = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(value) = value.to_str() else { return peer };
            hops.extend(value.split(',').map(forwarded_hop));
        }
        let mut last = None;
        for hop in hops.iter().rev() {
            match hop {
                None => return peer,
                Some(ip) if self.contains(*ip) => last = Some(*ip),
                Some(ip) => return SocketAddr::new(*ip, 0),
            }
        }
        // Every hop is a trusted proxy: the farthest one is the client.
        last.map_or(peer, |ip| SocketAddr::new(ip, 0))
    }
}

/// One `X-Forwarded-For` entry: an address, with or without a port (`[v6]:port` for IPv6).
fn forwarded_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7, 10.1.2.3"));
        let behind: SocketAddr = "10.9.9.9:4000".parse().unwrap();
        assert_eq!(proxies.client(behind, &headers).ip().to_string(), "203.0.113.7");
        let stranger: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        assert_eq!(
            proxies.client(stranger, &headers),
            stranger,
            "a stranger's header is ignored"
        );
        let local: SocketAddr = "[::1]:4000".parse().unwrap();
        assert_eq!(proxies.client(local, &HeaderMap::new()), local, "no header: the peer");
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        let from = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", HeaderValue::from_static(value));
            proxies.client(behind, &headers)
        };
        assert_eq!(from("203.0.113.7, 10.1.2.3").ip().to_string(), "203.0.113.7");
        // Issue 12 item 7: entries with ports are read, so a forged entry before them is not.
        assert_eq!(from("6.6.6.6, 203.0.113.7:5000").ip().to_string(), "203.0.113.7");
        assert_eq!(
            from("6.6.6.6, [2001:db8::7]:443, 10.0.0.1:80").ip().to_string(),
            "2001:db8::7"
        );
        assert_eq!(from("6.6.6.6, [2001:db8::8]").ip().to_string(), "2001:db8::8");
        // Unreadable before the client is found: the peer, never an entry left of it.
        assert_eq!(from("6.6.6.6, unknown"), behind);
        assert_eq!(from("6.6.6.6, 203.0.113.7:port"), behind);
        assert_eq!(from("6.6.6.6,, 10.0.0.1"), behind);
        assert_eq!(from("6.6.6.6, _hidden"), behind);
        // Garbage left of the client does not matter.
        assert_eq!(from("garbage, 203.0.113.9").ip().to_string(), "203.0.113.9");
        assert_eq!(
            from("10.0.0.2, 10.0.0.1").ip().to_string(),
            "10.0.0.2",
            "all proxies: the farthest"
        );
        assert!(TrustedProxies::parse(&["nope".into()]).is_err());
    }
}
