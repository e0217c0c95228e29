defmodule Micelio.Storage.NamedStore.Functions do
  @moduledoc false
  # The functions a store module defined with `use Micelio.Storage` gets,
  # and the code that defines them (see `Micelio.Storage.__using__/1`).
  # Each forwards to `Micelio.Storage.NamedStore.call/5`; a test checks
  # that the list covers the facade.

  # {name, arguments before the options, raises?}
  @functions [
    {:put, [:key, :content], false},
    {:put!, [:key, :content], true},
    {:put_if_none_match, [:key, :content], false},
    {:put_if_none_match!, [:key, :content], true},
    {:put_if_match, [:key, :content, :etag], false},
    {:put_if_match!, [:key, :content, :etag], true},
    {:get, [:key], false},
    {:get!, [:key], true},
    {:get_with_metadata, [:key], false},
    {:get_with_metadata!, [:key], true},
    {:head, [:key], false},
    {:head!, [:key], true},
    {:exists?, [:key], true},
    {:delete, [:key], false},
    {:delete!, [:key], true},
    {:copy, [:source_key, :destination_key], false},
    {:copy!, [:source_key, :destination_key], true},
    {:delete_many, [:keys], false},
    {:delete_many!, [:keys], true},
    {:put_file, [:key, :path], false},
    {:put_file!, [:key, :path], true},
    {:put_stream, [:key, :enumerable], false},
    {:put_stream!, [:key, :enumerable], true},
    {:get_file, [:key, :path], false},
    {:get_file!, [:key, :path], true},
    {:stream, [:key], true},
    {:stream!, [:key], true},
    {:list_with_delimiter, [prefix: ""], false},
    {:list_with_delimiter!, [prefix: ""], true},
    {:stream_keys, [prefix: ""], true},
    {:stream_keys!, [prefix: ""], true},
    {:put_content_addressed, [:content], false},
    {:put_content_addressed!, [:content], true},
    {:public_url, [:key], false},
    {:public_url!, [:key], true},
    {:stats, [], false},
    {:health, [], false},
    {:capabilities, [], false},
    {:open, [], false}
  ]

  @doc false
  # The forwarded functions as `{name, arity}` (the options counted).
  def list, do: for({name, args, _} <- @functions, do: {name, length(args) + 1})

  @doc false
  def define(opts) do
    otp_app = Keyword.fetch!(opts, :otp_app)

    functions =
      for {name, args, raising?} <- @functions do
        # An argument is a name, or `{name, default}` (the facade's default).
        vars =
          Enum.map(args, fn
            {arg, _} -> Macro.var(arg, nil)
            arg -> Macro.var(arg, nil)
          end)

        params =
          Enum.map(args, fn
            {arg, default} -> quote(do: unquote(Macro.var(arg, nil)) \\ unquote(default))
            arg -> Macro.var(arg, nil)
          end)

        quote do
          @doc "See `Micelio.Storage.#{unquote(name)}/#{unquote(length(args) + 1)}`."
          def unquote(name)(unquote_splicing(params), opts \\ []) do
            Micelio.Storage.NamedStore.call(
              __MODULE__,
              unquote(name),
              [unquote_splicing(vars)],
              opts,
              unquote(raising?)
            )
          end
        end
      end

    quote do
      @behaviour Micelio.Storage.NamedStore

      @doc false
      def __micelio_storage__(:otp_app), do: unquote(otp_app)

      @doc "Adjusts the configuration at runtime; see `Micelio.Storage.NamedStore`."
      @impl Micelio.Storage.NamedStore
      def init(_context, config), do: {:ok, config}
      defoverridable init: 2

      @doc "The child spec: builds the store when the supervisor starts."
      def child_spec(opts), do: Micelio.Storage.NamedStore.child_spec(__MODULE__, opts)

      @doc "Starts the store (usually through `child_spec/1`)."
      def start_link(opts \\ []), do: Micelio.Storage.NamedStore.start_link(__MODULE__, opts)

      @doc "The store's configuration: its app config after `init/2`."
      def config, do: Micelio.Storage.NamedStore.config(__MODULE__)

      @doc "See `Micelio.Storage.list/2`."
      def list(prefix \\ "", opts \\ []),
        do: Micelio.Storage.NamedStore.call(__MODULE__, :list, [prefix], opts, false)

      @doc "See `Micelio.Storage.list!/2`."
      def list!(prefix \\ "", opts \\ []),
        do: Micelio.Storage.NamedStore.call(__MODULE__, :list!, [prefix], opts, true)

      @doc "See `Micelio.Storage.presigned_url/2`."
      def presigned_url(key, opts \\ []) do
        {presign, storage} = Micelio.Storage.Presign.split_options(opts)

        with {:ok, handle} <-
               Micelio.Storage.Lookup.presign_handle(
                 __MODULE__,
                 storage,
                 &Micelio.Storage.NamedStore.handle(__MODULE__, &1)
               ),
             do: Micelio.Storage.presigned_url(key, [{:storage, handle} | presign])
      end

      @doc "See `Micelio.Storage.presigned_post/2`."
      def presigned_post(key_or_prefix, opts \\ []) do
        {post, storage} = Micelio.Storage.Presign.split_post_options(opts)

        with {:ok, handle} <-
               Micelio.Storage.Lookup.presign_handle(
                 __MODULE__,
                 storage,
                 &Micelio.Storage.NamedStore.handle(__MODULE__, &1)
               ),
             do: Micelio.Storage.presigned_post(key_or_prefix, [{:storage, handle} | post])
      end

      @doc "See `Micelio.Storage.S3.abort_incomplete_uploads/2`."
      def abort_incomplete_uploads(prefix \\ "", opts \\ [])

      def abort_incomplete_uploads(prefix, opts) when is_list(opts) do
        {own, storage} =
          if Keyword.keyword?(opts), do: Keyword.split(opts, [:older_than]), else: {[], opts}

        with {:ok, handle} <- Micelio.Storage.NamedStore.handle(__MODULE__, storage),
             do: Micelio.Storage.S3.abort_incomplete_uploads(prefix, [{:storage, handle} | own])
      end

      def abort_incomplete_uploads(prefix, opts),
        do: Micelio.Storage.S3.abort_incomplete_uploads(prefix, opts)

      unquote_splicing(functions)
    end
  end
end
