%% inets httpd callback: every request is answered by Hello.report/1.
-module(hello_handler).
-export([do/1]).
-include_lib("inets/include/httpd.hrl").

do(#mod{request_uri = Uri}) ->
    Body = 'Elixir.Hello':report(list_to_binary(Uri)),
    {proceed, [{response, {200, binary_to_list(Body)}}]}.
