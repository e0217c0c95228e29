defmodule Micelio.Storage.LargeObjectsTest do
  # Objects larger than memory, against a real SeaweedFS (the shared cases
  # in test/support/large_object_cases.ex, which moto, s3rver and s3s-fs
  # run too), plus presigned PUTs with a content type and server-side
  # encryption.
  use ExUnit.Case, async: false
  use Micelio.Storage.LargeObjectCases, server: Micelio.Storage.Test.Seaweed

  @moduletag :s3

  test "a presigned PUT signs its content type", %{opts: o} do
    {:ok, url} =
      Storage.presigned_url("pre/photo.jpg", o ++ [method: :put, content_type: "image/jpeg"])

    put = fn type ->
      {:ok, {{_, status, _}, _, _}} =
        :httpc.request(:put, {to_charlist(url), [], to_charlist(type), "jpeg bytes"}, [], [])

      status
    end

    assert put.("text/plain") == 403
    assert put.("image/jpeg") == 200
    assert %{content_type: "image/jpeg", size: 10} = Storage.head!("pre/photo.jpg", o)

    {:ok, get_url} =
      Storage.presigned_url(
        "pre/photo.jpg",
        o ++ [response_content_disposition: "attachment; filename=\"p.jpg\""]
      )

    {:ok, {{_, 200, _}, headers, ~c"jpeg bytes"}} = :httpc.request(to_charlist(get_url))
    assert {~c"content-disposition", ~c"attachment; filename=\"p.jpg\""} in headers
  end

  test "server-side encryption is asked on every write", %{opts: o} do
    enc = o ++ [s3_sse: :aes256]
    Storage.put!("sse/a", "secret", enc)
    assert Storage.get!("sse/a", enc) == "secret"
  end

  # A part the server is still writing when the abort lands can outlive
  # the abort (s3s-fs kept one on its disk for good). So a dying upload
  # lets its parts in flight finish, then aborts: the proxy holds every
  # part 600 ms on its way, and the caller dies while they are held.
  test "a killed upload aborts only after its parts in flight are answered", %{dir: dir, opts: o} do
    {:ok, proxy} = FaultProxy.start_link(Micelio.Storage.Test.Seaweed.port())
    FaultProxy.delay_matching(proxy, ~r/^PUT .*partNumber=/, 600)

    through =
      Keyword.merge(o, s3_endpoint: "http://127.0.0.1:#{FaultProxy.port(proxy)}", s3_pool_size: 0)

    src = random_file(Path.join(dir, "d.bin"), 64)
    me = self()

    caller =
      spawn(fn ->
        Storage.put_file("big/held", src, through ++ [progress: fn _, _ -> send(me, :part) end])
      end)

    assert_receive :part, 30_000
    Process.exit(caller, :kill)
    assert eventually(fn -> Micelio.Storage.Test.Seaweed.uploads_in_progress(o) == [] end)

    events = FaultProxy.events(proxy)

    {before_abort, [_abort | _]} =
      Enum.split_while(events, &(not match?({:received, "DELETE " <> _}, &1)))

    parts_sent =
      for {:received, "PUT " <> _ = line} <- before_abort, line =~ "partNumber=", do: line

    parts_answered = for {:answered, "PUT " <> _ = line} <- before_abort, do: line
    assert parts_sent != []
    assert Enum.sort(parts_answered) == Enum.sort(parts_sent)
  end
end
