defmodule Micelio.Storage.Plug.Responses do
  @moduledoc false
  # The HTTP decisions of `Micelio.Storage.Plug`, pure and without Plug:
  # which response a request's conditional and range headers call for
  # (RFC 9110 sections 13 and 14), and the header values it sends.

  @doc false
  # `:not_modified`, `:unsatisfiable`, `{:partial, first, last}` (both
  # included) or `:full`, for request headers (lowercase names) and the
  # object's metadata.
  def choose(headers, %{etag: etag, size: size, last_modified: modified}) do
    cond do
      not_modified?(headers, etag, modified) -> :not_modified
      true -> range(headers, etag, size, modified)
    end
  end

  # If-None-Match wins over If-Modified-Since (weak comparison, "*" for any).
  defp not_modified?(headers, etag, modified) do
    case header(headers, "if-none-match") do
      nil ->
        case header(headers, "if-modified-since") |> parse_date() do
          {:ok, since} -> DateTime.compare(truncate(modified), since) != :gt
          :error -> false
        end

      value ->
        tags = value |> String.split(",") |> Enum.map(&String.trim/1)
        "*" in tags or Enum.any?(tags, &(opaque(&1) == etag))
    end
  end

  defp range(headers, etag, size, modified) do
    with "bytes=" <> specs <- header(headers, "range"),
         true <- if_range_holds?(header(headers, "if-range"), etag, modified),
         [spec] <- String.split(specs, ",") do
      spec(String.trim(spec), size)
    else
      # Several ranges get the whole object; so do a failed If-Range and a
      # Range that is not about bytes.
      _ -> :full
    end
  end

  defp if_range_holds?(nil, _etag, _modified), do: true

  defp if_range_holds?("\"" <> _ = tag, etag, _modified), do: opaque(tag) == etag
  # A weak tag never matches (If-Range needs a strong comparison).
  defp if_range_holds?("W/" <> _, _etag, _modified), do: false

  defp if_range_holds?(date, _etag, modified) do
    case parse_date(date) do
      {:ok, at} -> DateTime.compare(truncate(modified), at) == :eq
      :error -> false
    end
  end

  defp spec(spec, size) do
    case String.split(spec, "-", parts: 2) do
      ["", suffix] ->
        case Integer.parse(suffix) do
          {n, ""} when n > 0 and size > 0 -> {:partial, max(size - n, 0), size - 1}
          {0, ""} -> :unsatisfiable
          _ -> :full
        end

      [first, ""] ->
        case Integer.parse(first) do
          {a, ""} when a < size -> {:partial, a, size - 1}
          {_a, ""} -> :unsatisfiable
          _ -> :full
        end

      [first, last] ->
        case {Integer.parse(first), Integer.parse(last)} do
          {{a, ""}, {b, ""}} when b < a -> :full
          {{a, ""}, {b, ""}} when a < size -> {:partial, a, min(b, size - 1)}
          {{_a, ""}, {_b, ""}} -> :unsatisfiable
          _ -> :full
        end

      _ ->
        :full
    end
  end

  defp header(headers, name) do
    case List.keyfind(headers, name, 0) do
      {_, value} -> value
      nil -> nil
    end
  end

  # The opaque part of an entity tag: `"abc"` and `W/"abc"` are both `abc`.
  defp opaque("W/" <> tag), do: opaque(tag)
  defp opaque(tag), do: String.trim(tag, "\"")

  defp truncate(%DateTime{} = at), do: DateTime.truncate(at, :second)

  @doc false
  # An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
  def http_date(%DateTime{} = at) do
    at
    |> DateTime.shift_zone!("Etc/UTC")
    |> Calendar.strftime("%a, %d %b %Y %H:%M:%S GMT")
  end

  @months ~w(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec)

  @doc false
  def parse_date(nil), do: :error

  def parse_date(value) do
    with [_day, dd, mon, yyyy, time, "GMT"] <- String.split(String.trim(value), " "),
         month when is_integer(month) <- Enum.find_index(@months, &(&1 == mon)),
         {:ok, date} <- Date.new(int(yyyy), month + 1, int(dd)),
         {:ok, time} <- Time.from_iso8601(time),
         {:ok, at} <- DateTime.new(date, time, "Etc/UTC") do
      {:ok, at}
    else
      _ -> :error
    end
  rescue
    ArgumentError -> :error
  end

  defp int(s), do: String.to_integer(s)

  @doc false
  # `inline` or `attachment` with the name as RFC 6266 says: an ASCII
  # `filename` fallback for old clients, and `filename*` in UTF-8 with
  # percent-encoding for any name.
  def content_disposition(kind, name) do
    fallback =
      name
      |> String.to_charlist()
      |> Enum.map(fn c -> if c in 0x20..0x7E and c not in [?", ?\\, ?%], do: c, else: ?_ end)
      |> List.to_string()

    encoded = URI.encode(name, &URI.char_unreserved?/1)
    ~s(#{kind}; filename="#{fallback}"; filename*=UTF-8''#{encoded})
  end

  @doc false
  # Keys named by their content (`put_content_addressed/2`) never change.
  def content_addressed?(key), do: key =~ ~r/sha256:[0-9a-f]{64}$/
end
