defmodule Micelio.Storage.PresignedPostTest do
  # presigned_post/2: real multipart/form-data POSTs (as a browser sends
  # them) to SeaweedFS and to moto, a second implementation. Each server's
  # answer to each broken condition is asserted; where a server does not
  # enforce a condition, the table below says so by name and the test
  # checks that it indeed lets the upload in (so a server that starts
  # enforcing it is noticed too).
  use ExUnit.Case, async: false

  alias Micelio.Storage.Test.{Moto, Seaweed}

  @moduletag :s3
  @moduletag timeout: 120_000

  # What each server does with an upload that breaks a condition.
  @enforces %{
    seaweedfs: %{
      too_big: :refused,
      wrong_type: :refused,
      expired: :refused,
      bad_signature: :refused,
      outside_prefix: :refused
    },
    moto: %{
      too_big: {:not_enforced, "moto does not check the policy's content-length-range"},
      wrong_type: {:not_enforced, "moto does not check the policy's Content-Type condition"},
      expired: {:not_enforced, "moto does not check the policy's expiration"},
      bad_signature: {:not_enforced, "moto does not verify POST policy signatures"},
      outside_prefix:
        {:not_enforced, "moto does not check the policy's starts-with $key condition"}
    }
  }

  setup_all do
    :ok = Seaweed.ensure_started()
    Moto.ensure_started()
    :ok
  end

  for server <- [:seaweedfs, :moto] do
    describe "#{server}" do
      @describetag server: server

      test "an upload within the policy lands, with its metadata", %{server: server} do
        opts = opts(server)

        {:ok, %{url: url, fields: fields}} =
          Micelio.Storage.presigned_post(
            "uploads/a.txt",
            opts ++
              [
                content_length_range: {1, 64},
                content_type: "text/plain",
                success_action_status: 201,
                metadata: %{"owner" => "ana"},
                cache_control: "max-age=60"
              ]
          )

        assert fields["key"] =~ ~r{uploads/a\.txt$}
        assert fields["success_action_status"] == "201"
        assert {201, _} = form_post(url, fields, "hello", "text/plain")

        assert {:ok, "hello"} = Micelio.Storage.get("uploads/a.txt", opts)
        assert {:ok, meta} = Micelio.Storage.head("uploads/a.txt", opts)
        assert meta.content_type == "text/plain"
        assert meta.metadata == %{"owner" => "ana"}
      end

      test "a prefix policy takes any key under it", %{server: server} do
        opts = opts(server)

        {:ok, %{url: url, fields: fields}} =
          Micelio.Storage.presigned_post("avatars/", opts ++ [key_starts_with: true])

        assert String.ends_with?(fields["key"], "avatars/${filename}")
        assert {status, _} = form_post(url, fields, "png!", "image/png", "me.png")
        assert status in [200, 204]
        assert {:ok, "png!"} = Micelio.Storage.get("avatars/me.png", opts)

        key = String.replace(fields["key"], "${filename}", "chosen.png")
        assert {status, _} = form_post(url, %{fields | "key" => key}, "2", "image/png")
        assert status in [200, 204]
        assert {:ok, "2"} = Micelio.Storage.get("avatars/chosen.png", opts)
      end

      test "an upload over the size limit", %{server: server} do
        opts = opts(server)

        {:ok, %{url: url, fields: fields}} =
          Micelio.Storage.presigned_post("big.bin", opts ++ [content_length_range: {1, 10}])

        check(server, :too_big, form_post(url, fields, String.duplicate("x", 100)), fn ->
          Micelio.Storage.exists?("big.bin", opts)
        end)
      end

      test "an upload of the wrong type", %{server: server} do
        opts = opts(server)

        {:ok, %{url: url, fields: fields}} =
          Micelio.Storage.presigned_post("pic", opts ++ [content_type: "image/png"])

        fields = Map.put(fields, "Content-Type", "text/html")

        check(server, :wrong_type, form_post(url, fields, "<script>", "text/html"), fn ->
          Micelio.Storage.exists?("pic", opts)
        end)
      end

      test "an upload with an expired policy", %{server: server} do
        opts = opts(server)

        {:ok, %{url: url, fields: fields}} =
          Micelio.Storage.presigned_post(
            "late.txt",
            opts ++ [expires_in: 1, datetime: DateTime.add(DateTime.utc_now(), -600)]
          )

        check(server, :expired, form_post(url, fields, "late"), fn ->
          Micelio.Storage.exists?("late.txt", opts)
        end)
      end

      test "a policy whose signature does not match", %{server: server} do
        opts = opts(server)
        {:ok, %{url: url, fields: fields}} = Micelio.Storage.presigned_post("sig.txt", opts)
        fields = Map.update!(fields, "x-amz-signature", &tamper/1)

        check(server, :bad_signature, form_post(url, fields, "forged"), fn ->
          Micelio.Storage.exists?("sig.txt", opts)
        end)
      end

      test "a key outside the policy's prefix", %{server: server} do
        opts = opts(server)

        {:ok, %{url: url, fields: fields}} =
          Micelio.Storage.presigned_post("mine/", opts ++ [key_starts_with: true])

        outside = String.replace(fields["key"], "mine/${filename}", "theirs.txt")

        check(server, :outside_prefix, form_post(url, %{fields | "key" => outside}, "x"), fn ->
          Micelio.Storage.exists?("theirs.txt", opts)
        end)
      end
    end
  end

  describe "options" do
    test "bad options are clear errors" do
      opts = Seaweed.opts()

      assert {:error, {:invalid_config, :content_length_range, _}} =
               Micelio.Storage.presigned_post("a", opts ++ [content_length_range: {10, 1}])

      assert {:error, {:invalid_config, :content_type, _}} =
               Micelio.Storage.presigned_post(
                 "a",
                 opts ++ [content_type: "a/b", content_type_starts_with: "a/"]
               )

      assert {:error, {:invalid_config, :expires_in, _}} =
               Micelio.Storage.presigned_post("a", opts ++ [expires_in: 0])

      assert {:error, {:invalid_config, :success_action_status, _}} =
               Micelio.Storage.presigned_post("a", opts ++ [success_action_status: 302])

      assert {:error, {:invalid_key, _}} = Micelio.Storage.presigned_post("../a", opts)

      # Stores that are not S3 have no POST uploads.
      {:ok, memory} = Micelio.Storage.open(backend: :memory)

      assert {:error, {:invalid_config, :backend, _}} =
               Micelio.Storage.presigned_post("a", storage: memory)
    end

    test "the policy's secret never shows: only the signature and the access key id" do
      opts = Seaweed.opts()
      {:ok, post} = Micelio.Storage.presigned_post("a", opts)
      refute inspect(post) =~ Seaweed.secret_key()
      policy = Base.decode64!(post.fields["policy"])
      refute policy =~ Seaweed.secret_key()
      assert policy =~ Seaweed.access_key()
    end
  end

  ## Helpers

  defp opts(:seaweedfs), do: Seaweed.opts()
  defp opts(:moto), do: Moto.opts()

  defp check(server, condition, {status, body}, stored?) do
    case @enforces[server][condition] do
      :refused ->
        assert status in 400..499,
               "#{server} accepted an upload breaking #{condition}: #{status} #{body}"

        refute stored?.()

      {:not_enforced, why} ->
        # Said by name: the server lets this upload in.
        IO.puts("\n[presigned_post] #{server}: #{why} (#{condition} is accepted)")

        assert status in 200..299,
               "#{server} now refuses #{condition}: update the table (#{status})"

        assert stored?.()
    end
  end

  defp tamper(signature) do
    <<first, rest::binary>> = signature
    <<if(first == ?0, do: ?1, else: ?0), rest::binary>>
  end

  # A multipart/form-data POST as a browser's form sends it: the fields,
  # then the file last.
  defp form_post(url, fields, content, type \\ "text/plain", filename \\ "upload.txt") do
    boundary = "----micelio#{System.unique_integer([:positive])}"

    parts =
      for {name, value} <- fields do
        [
          "--",
          boundary,
          "\r\n",
          ~s(content-disposition: form-data; name="#{name}"\r\n\r\n),
          value,
          "\r\n"
        ]
      end

    body =
      IO.iodata_to_binary([
        parts,
        "--#{boundary}\r\n",
        ~s(content-disposition: form-data; name="file"; filename="#{filename}"\r\n),
        "content-type: #{type}\r\n\r\n",
        content,
        "\r\n--#{boundary}--\r\n"
      ])

    {:ok, {{_, status, _}, _headers, resp}} =
      :httpc.request(
        :post,
        {String.to_charlist(url), [],
         String.to_charlist("multipart/form-data; boundary=#{boundary}"), body},
        [timeout: 30_000],
        body_format: :binary
      )

    {status, resp}
  end
end
