//! Configurations of the servers compared, each tuned as its own docs advise
//! (one worker, keep-alive to clients and upstream, no access logs).

use std::path::Path;

use anyhow::Result;

fn temp_paths(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "client_body_temp_path {d}/t-body; proxy_temp_path {d}/t-proxy; fastcgi_temp_path {d}/t-fcgi; \
         uwsgi_temp_path {d}/t-uwsgi; scgi_temp_path {d}/t-scgi;"
    )
}

/// nginx serving static files from `dir/www` (the origin every proxy uses).
pub fn nginx_origin(dir: &Path, port: u16) -> Result<String> {
    let d = dir.display();
    Ok(format!(
        "user root; worker_processes 1; daemon off; pid {d}/origin.pid; error_log {d}/origin.error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off; sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 10000000; keepalive_timeout 75s;
  {temps}
  server {{ listen 127.0.0.1:{port} backlog=4096; root {d}/www;
    location / {{ add_header Cache-Control \"public, max-age=3600\"; }} }}
}}
",
        temps = temp_paths(dir)
    ))
}

/// nginx as a reverse proxy: upstream keepalive, HTTP/1.1 upstream, as the
/// nginx docs advise for proxying with keep-alive.
pub fn nginx_proxy(dir: &Path, port: u16, origin: u16) -> Result<String> {
    let d = dir.display();
    Ok(format!(
        "user root; worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off; tcp_nodelay on;
  keepalive_requests 10000000; keepalive_timeout 75s;
  {temps}
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 128; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
}}
",
        temps = temp_paths(dir)
    ))
}

/// HAProxy in HTTP mode, one thread, connection reuse to the server.
pub fn haproxy(port: u16, origin: u16) -> String {
    format!(
        "global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server origin 127.0.0.1:{origin} maxconn 10000
"
    )
}

/// HAProxy with its RAM `cache` section (1 GiB, objects up to 4 MiB, as the
/// shared harness `../shared/peers/cache.sh` sets it), one thread.
pub fn haproxy_cache(port: u16, origin: u16) -> String {
    format!(
        "global
  nbthread 1
  maxconn 8000
  tune.bufsize 65536
cache edge
  total-max-size 1024
  max-object-size 4194304
  max-age 3600
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  http-request cache-use edge
  http-response cache-store edge
  server origin 127.0.0.1:{origin} maxconn 10000
"
    )
}

/// edge as a load balancer in front of the origin, one worker thread.
pub fn edge_proxy(port: u16, origin: u16) -> String {
    // EDGE_BENCH_SERVER adds keys to [server] (to compare settings).
    let extra = std::env::var("EDGE_BENCH_SERVER").unwrap_or_default();
    format!(
        "[server]
threads = 1
access_log = false
upstream_keepalive = 128
{extra}

[admin]
listen = \"127.0.0.1:0\"

[[listener]]
name = \"web\"
kind = \"http\"
address = \"127.0.0.1:{port}\"

[[pool]]
name = \"origin\"
backends = [{{ address = \"127.0.0.1:{origin}\" }}]

[[route]]
name = \"all\"
pool = \"origin\"
"
    )
}

/// nginx as a caching proxy (`proxy_cache`, as its docs set one up): hits
/// come from its cache files through the page cache, with sendfile.
/// (`tcp_nopush` is left off: with it, 100 KiB hits on loopback stall on
/// delayed ACKs, 1.7k req/s instead of 19.7k.)
pub fn nginx_cache(dir: &Path, port: u16, origin: u16) -> Result<String> {
    let d = dir.display();
    Ok(format!(
        "user root; worker_processes 1; daemon off; pid {d}/nginx-cache.pid; error_log {d}/nginx-cache.error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off; tcp_nodelay on; sendfile on;
  keepalive_requests 10000000; keepalive_timeout 75s;
  {temps}
  proxy_cache_path {d}/nginx-cache levels=1:2 keys_zone=edge:64m max_size=2g inactive=1h use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 128; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_cache edge;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
    }}
  }}
}}
",
        temps = temp_paths(dir)
    ))
}

/// Varnish's command line: RAM storage (malloc), one thread pool.
pub fn varnish_args(dir: &Path, port: u16, origin: u16) -> Vec<String> {
    [
        "-F",
        "-j",
        "none",
        "-a",
        &format!("127.0.0.1:{port}"),
        "-b",
        &format!("127.0.0.1:{origin}"),
        "-s",
        "malloc,1g",
        "-n",
        &format!("{}/varnish", dir.display()),
        "-p",
        "thread_pools=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// edge as a caching proxy: the proxy config above with a cached route and
/// a RAM tier.
pub fn edge_cache(port: u16, origin: u16) -> String {
    edge_proxy(port, origin) + "[route.cache]\n\n[cache]\nram_size = \"1 GiB\"\n"
}

/// A self-signed ECDSA P-256 certificate and key for the HTTPS rows
/// (`cert.pem`, `key.pem`, and `both.pem` for HAProxy), made with openssl.
pub fn self_signed(dir: &Path) -> Result<(String, String, String)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-subj", "/CN=bench.test"])
        .args(["-addext", "subjectAltName=DNS:bench.test", "-days", "2"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let both = dir.join("both.pem");
    std::fs::write(
        &both,
        [std::fs::read(&cert)?, std::fs::read(&key)?].concat(),
    )?;
    let s = |p: std::path::PathBuf| p.display().to_string();
    Ok((s(cert), s(key), s(both)))
}

/// nginx terminating TLS 1.3 in front of the origin (the proxy config above
/// with an `ssl` listener).
pub fn nginx_https_proxy(
    dir: &Path,
    port: u16,
    origin: u16,
    cert: &str,
    key: &str,
) -> Result<String> {
    Ok(nginx_proxy(dir, port, origin)?.replace(
        &format!("listen 127.0.0.1:{port} backlog=4096;"),
        &format!(
            "listen 127.0.0.1:{port} ssl backlog=4096;\n    ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.3;"
        ),
    ))
}

/// HAProxy terminating TLS 1.3 (`ssl crt`, `ssl-min-ver TLSv1.3`).
pub fn haproxy_https(port: u16, origin: u16, both_pem: &str) -> String {
    haproxy(port, origin).replace(
        &format!("bind 127.0.0.1:{port}\n"),
        &format!("bind 127.0.0.1:{port} ssl crt {both_pem} ssl-min-ver TLSv1.3\n"),
    )
}

/// edge with an https listener (TLS 1.3 is what rustls and wrk agree on).
pub fn edge_https_proxy(port: u16, origin: u16, cert: &str, key: &str) -> String {
    let addr = format!("address = \"127.0.0.1:{port}\"\n");
    edge_proxy(port, origin)
        .replace("kind = \"http\"\n", "kind = \"https\"\n")
        .replace(
            &addr,
            &format!("{addr}\n[[listener.certificate]]\ncert = \"{cert}\"\nkey = \"{key}\"\n"),
        )
}

/// The cache peers with cleartext HTTP/2 by prior knowledge on their
/// client side: nginx `listen … http2`, HAProxy `bind … proto h2`,
/// Varnish `feature=+http2`, edge `h2c = true`.
pub fn nginx_cache_h2c(dir: &Path, port: u16, origin: u16) -> Result<String> {
    Ok(nginx_cache(dir, port, origin)?.replace(
        &format!("listen 127.0.0.1:{port} backlog=4096;"),
        &format!("listen 127.0.0.1:{port} http2 backlog=4096;"),
    ))
}

pub fn haproxy_cache_h2c(port: u16, origin: u16) -> String {
    haproxy_cache(port, origin).replace(
        &format!("bind 127.0.0.1:{port}\n"),
        &format!("bind 127.0.0.1:{port} proto h2\n"),
    )
}

pub fn varnish_args_h2c(dir: &Path, port: u16, origin: u16) -> Vec<String> {
    let mut args = varnish_args(dir, port, origin);
    args.extend(["-p".to_string(), "feature=+http2".to_string()]);
    args
}

pub fn edge_cache_h2c(port: u16, origin: u16) -> String {
    edge_cache(port, origin).replace("kind = \"http\"\n", "kind = \"http\"\nh2c = true\n")
}
