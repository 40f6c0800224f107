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

    /// The client a request comes from: behind a trusted proxy, the right-most address of
    /// `X-Forwarded-For` that is not itself a trusted proxy; otherwise the peer.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if self.0.is_empty() || !self.contains(peer.ip()) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse().ok())
            .collect();
        match hops.iter().rev().find(|ip| !self.contains(**ip)).or(hops.first()) {
            Some(ip) => SocketAddr::new(*ip, 0),
            None => peer,
        }
    }
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
        assert!(TrustedProxies::parse(&["nope".into()]).is_err());
    }
}
