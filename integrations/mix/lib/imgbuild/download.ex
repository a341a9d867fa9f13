defmodule Imgbuild.Download do
  @moduledoc false
  # HTTP(S) downloads with OTP's :httpc, in a profile of our own so that the proxy settings
  # taken from the environment do not touch anyone else's :httpc.

  @profile :imgbuild

  @doc "GETs `url` and returns the body, or raises a one-line Mix error."
  @spec get!(String.t()) :: binary()
  def get!(url) do
    uri = URI.parse(url)

    unless uri.scheme in ["http", "https"] and is_binary(uri.host) do
      Mix.raise("cannot download #{url}: config :imgbuild, base_url: must be an http(s) URL")
    end

    start_httpc!()
    set_proxies()

    http_opts =
      [connect_timeout: 30_000, autoredirect: true] ++
        ssl_opts(uri) ++ proxy_auth(uri)

    request = {String.to_charlist(url), [{~c"user-agent", ~c"imgbuild-mix"}]}

    case :httpc.request(:get, request, http_opts, [body_format: :binary], @profile) do
      {:ok, {{_, 200, _}, _headers, body}} ->
        body

      {:ok, {{_, status, reason}, _headers, _body}} ->
        Mix.raise(
          "cannot download #{url}: HTTP #{status} #{reason}; " <>
            "check config :imgbuild, base_url: and version:"
        )

      {:error, reason} ->
        case tls_alert(reason) do
          {alert, description} ->
            Mix.raise(
              "cannot download #{url}: TLS handshake failed (#{alert}: " <>
                "#{description |> to_string() |> String.trim()}); the server certificate " <>
                "was checked against #{trust_store()}; if the server uses a private CA, " <>
                "set config :imgbuild, cacerts_path: to a PEM file holding that CA"
            )

          nil ->
            Mix.raise(
              "cannot download #{url}: #{inspect(reason)}; check the network, " <>
                "HTTP_PROXY/HTTPS_PROXY/NO_PROXY, and config :imgbuild, base_url:"
            )
        end
    end
  end

  # The {:tls_alert, {alert, description}} somewhere inside an :httpc error, if any.
  defp tls_alert({:tls_alert, {alert, description}}), do: {alert, description}
  defp tls_alert([head | tail]), do: tls_alert(head) || tls_alert(tail)
  defp tls_alert(tuple) when is_tuple(tuple), do: tuple |> Tuple.to_list() |> tls_alert()
  defp tls_alert(_), do: nil

  defp trust_store do
    case Application.get_env(:imgbuild, :cacerts_path) do
      nil -> "the system CA store"
      path -> "config :imgbuild, cacerts_path: #{inspect(Path.expand(to_string(path)))}"
    end
  end

  defp start_httpc! do
    {:ok, _} = Application.ensure_all_started(:inets)
    {:ok, _} = Application.ensure_all_started(:ssl)

    # A fresh profile each time, so proxies unset since an earlier call are gone too.
    _ = :inets.stop(:httpc, @profile)

    case :inets.start(:httpc, profile: @profile) do
      {:ok, _} -> :ok
      {:error, reason} -> Mix.raise("cannot start :httpc: #{inspect(reason)}")
    end
  end

  # Proxies from the environment; loopback is never proxied.
  defp set_proxies do
    no_proxy = no_proxy_list()

    opts =
      for {key, names} <- [
            proxy: ["http_proxy", "HTTP_PROXY"],
            https_proxy: ["https_proxy", "HTTPS_PROXY"]
          ],
          proxy = env_first(names),
          proxy != nil do
        {key, {proxy_host_port(proxy, names), no_proxy}}
      end

    :ok = :httpc.set_options(opts, @profile)
  end

  defp proxy_auth(uri) do
    names =
      if uri.scheme == "https",
        do: ["https_proxy", "HTTPS_PROXY"],
        else: ["http_proxy", "HTTP_PROXY"]

    with proxy when is_binary(proxy) <- env_first(names),
         %URI{userinfo: userinfo} when is_binary(userinfo) <- parse_proxy(proxy),
         [user, pass] <- String.split(userinfo, ":", parts: 2) do
      [proxy_auth: {String.to_charlist(URI.decode(user)), String.to_charlist(URI.decode(pass))}]
    else
      _ -> []
    end
  end

  defp env_first(names) do
    Enum.find_value(names, fn name ->
      case System.get_env(name) do
        value when value in [nil, ""] -> nil
        value -> value
      end
    end)
  end

  defp parse_proxy(proxy) do
    if String.contains?(proxy, "://"), do: URI.parse(proxy), else: URI.parse("http://" <> proxy)
  end

  defp proxy_host_port(proxy, names) do
    case parse_proxy(proxy) do
      %URI{host: host, port: port} when is_binary(host) and host != "" ->
        {String.to_charlist(host), port || 80}

      _ ->
        Mix.raise("cannot parse the proxy #{inspect(proxy)} in #{Enum.join(names, "/")}")
    end
  end

  defp no_proxy_list do
    from_env =
      (env_first(["no_proxy", "NO_PROXY"]) || "")
      |> String.split(",", trim: true)
      |> Enum.map(&String.trim/1)
      |> Enum.reject(&(&1 == ""))
      |> Enum.map(fn
        "." <> domain -> "*." <> domain
        "*" <> _ = pattern -> pattern
        host -> host
      end)

    Enum.map(["localhost", "127.0.0.1", "::1" | from_env], &String.to_charlist/1)
  end

  # SNI and the host name check follow each connection's own host (a release URL that
  # redirects to another host is checked against that host).
  defp ssl_opts(%URI{scheme: "https"}) do
    [
      ssl:
        [
          verify: :verify_peer,
          depth: 4,
          customize_hostname_check: [
            match_fun: :public_key.pkix_verify_hostname_match_fun(:https)
          ]
        ] ++ cacerts()
    ]
  end

  defp ssl_opts(_uri), do: []

  defp cacerts do
    case Application.get_env(:imgbuild, :cacerts_path) do
      nil ->
        [cacerts: system_cacerts()]

      path ->
        path = Path.expand(to_string(path))

        unless File.regular?(path) do
          Mix.raise(
            "config :imgbuild, cacerts_path: #{inspect(path)} is not a file; " <>
              "point it at a PEM CA bundle such as /etc/ssl/certs/ca-certificates.crt"
          )
        end

        [cacertfile: String.to_charlist(path)]
    end
  end

  defp system_cacerts do
    Code.ensure_loaded(:public_key)

    certs =
      if function_exported?(:public_key, :cacerts_get, 0) do
        try do
          apply(:public_key, :cacerts_get, [])
        rescue
          _ -> []
        end
      else
        []
      end

    if certs == [] do
      Mix.raise(
        "no system CA certificates found for HTTPS (OTP 25+ reads the system store); " <>
          "set config :imgbuild, cacerts_path: \"/etc/ssl/certs/ca-certificates.crt\""
      )
    end

    certs
  end
end
