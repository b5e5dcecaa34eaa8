#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/: real goim packets, WebSocket frames and
upgrade requests (the ones comet's tests and goim's clients send), auth tokens, and the IM
request bodies of proto/tests/golden/ in both codecs. Each file starts with the bytes the
target reads first (settings, piece size, mode), as described in each target's doc comment.
Run from fuzz/: python3 make_corpus.py (deterministic; rewrites the seed files)."""
import base64, hashlib, hmac, json, os, struct, zlib

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "proto", "tests", "golden")


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def packet(op, body=b"", ver=1, seq=1):
    return struct.pack(">ihhii", 16 + len(body), 16, ver, op, seq) + body


TOKEN = b'{"mid":123, "room_id":"live://1000", "platform":"web", "accepts":[1000,1001,1002]}'
IM_TOKEN = b'{"mid":7,"key":"dev-1","room_id":"","platform":"ios","accepts":[1000],"im":"pb","im_token":"a.b.c"}'
PACKETS = {
    "heartbeat": packet(2),
    "auth": packet(7, TOKEN),
    "auth_im": packet(7, IM_TOKEN),
    "sub": packet(14, b"1000,1001"),
    "unsub": packet(16, b"1000"),
    "change_room": packet(12, b"live://1001"),
    "send_msg": packet(4, b"hello"),
    "im_send": packet(20, b'{"clientMsgId":"x","conv":{"kind":"P2P","id":"2"},"content":"hi"}', seq=5),
    "max_body": packet(4, b"\0" * 4096),
    "over_limit_header": packet(4, b"\0" * 4097)[:16],
    "bad_header_len": struct.pack(">ihhii", 16, 17, 1, 2, 1),
    "negative_len": struct.pack(">ihhii", -1, 16, 1, 2, 1),
    "partial": packet(7, TOKEN)[:20],
}


def packet_stream():
    for name, p in PACKETS.items():
        write("packet_stream", name, b"\x00\x07" + p)
    write("packet_stream", "several", b"\x00\x05" + PACKETS["auth"] + PACKETS["heartbeat"] + PACKETS["sub"])
    write("packet_stream", "one_byte_pieces", b"\x00\x01" + PACKETS["heartbeat"] + PACKETS["heartbeat"])
    write("packet_stream", "max_body_64k", b"\xff\x10" + packet(20, b"x" * 3000))
    write("packet_stream", "max_body_zero", b"\x80\x10" + packet(2) + packet(4, b"a"))


def raw_batch():
    def raw(op, body):
        return packet(op, body, ver=1, seq=0)
    write("raw_batch", "single", raw(1000, b"hello"))
    write("raw_batch", "room_batch", raw(1000, b"a") + raw(1001, b"") + raw(2000, b"\x07" * 300))
    write("raw_batch", "im_push", raw(41, b'{"messages":[]}') + raw(43, b"{}"))
    write("raw_batch", "truncated", raw(1000, b"hello")[:-1])
    write("raw_batch", "empty_bodies", raw(1000, b"") * 4)
    write("raw_batch", "bad_header", struct.pack(">ihhii", 8, 16, 1, 1000, 0))


def frame(opcode, payload, fin=True, rsv1=False, mask=b"\x37\xfa\x21\x3d"):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n <= 0xFFFF:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask:
        payload = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        head += mask
    return head + payload


def deflate(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def ws_frames():
    # settings: bit 0 masking required, bit 1 deflate agreed; piece size next.
    auth = PACKETS["auth"]
    write("ws_frames", "auth", b"\x00\x40" + frame(2, auth))
    write("ws_frames", "auth_text", b"\x01\x40" + frame(1, auth))
    write("ws_frames", "unmasked", b"\x00\x40" + frame(2, PACKETS["heartbeat"], mask=None))
    write("ws_frames", "unmasked_required", b"\x01\x40" + frame(2, PACKETS["heartbeat"], mask=None))
    write("ws_frames", "fragmented", b"\x00\x03" + frame(2, auth[:10], fin=False) + frame(9, b"ping")
          + frame(0, auth[10:40], fin=False) + frame(0, auth[40:]))
    write("ws_frames", "ping_pong_close", b"\x00\x05" + frame(9, b"hi") + frame(10, b"") + frame(8, b"\x03\xe8bye"))
    write("ws_frames", "deflated", b"\x02\x40" + frame(2, deflate(auth), rsv1=True))
    write("ws_frames", "deflated_fragmented", b"\x03\x02" + frame(2, deflate(auth)[:7], fin=False, rsv1=True)
          + frame(0, deflate(auth)[7:]))
    write("ws_frames", "deflate_bomb", b"\x02\x40" + frame(2, deflate(b"\0" * 100000), rsv1=True))
    write("ws_frames", "rsv1_without_deflate", b"\x00\x40" + frame(2, deflate(auth), rsv1=True))
    write("ws_frames", "len16", b"\x00\xff" + frame(2, PACKETS["max_body"]))
    write("ws_frames", "len64_over_limit", b"\x00\xff" + frame(2, packet(4, b"z" * 70000))[:14])
    write("ws_frames", "big_limit", b"\xfc\xff" + frame(2, packet(4, b"z" * 20000)))
    write("ws_frames", "several", b"\x00\x07" + b"".join(frame(2, p) for p in PACKETS.values()))
    write("ws_frames", "trailing_byte", b"\x00\x40" + frame(2, PACKETS["heartbeat"] + b"\0"))


def upgrade(extra=b"", key=b"dGhlIHNhbXBsZSBub25jZQ==", path=b"/sub"):
    return (b"GET " + path + b" HTTP/1.1\r\nHost: localhost:3102\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
            + extra + b"\r\n")


def ws_upgrade():
    write("ws_upgrade", "plain", upgrade())
    write("ws_upgrade", "cookie", upgrade(b"Cookie: a=b; c=d\r\nOrigin: http://x\r\n"))
    write("ws_upgrade", "deflate", upgrade(b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"))
    write("ws_upgrade", "deflate_params", upgrade(
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=15; "
        b"client_max_window_bits=\"10\"; server_no_context_takeover, x-webkit-deflate-frame\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n"))
    write("ws_upgrade", "deflate_declined", upgrade(b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n"))
    write("ws_upgrade", "bad_extension", upgrade(b"Sec-WebSocket-Extensions: permessage-deflate; =\r\n"))
    write("ws_upgrade", "with_frame", upgrade() + frame(2, PACKETS["auth"]))
    write("ws_upgrade", "partial", upgrade()[:40])
    write("ws_upgrade", "post", upgrade().replace(b"GET", b"POST", 1))
    write("ws_upgrade", "version_8", upgrade().replace(b"Version: 13", b"Version: 8"))
    write("ws_upgrade", "bad_key", upgrade(key=b"short"))
    write("ws_upgrade", "no_upgrade", b"GET /sub HTTP/1.1\r\nHost: x\r\n\r\n")
    write("ws_upgrade", "connection_list", upgrade().replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"))
    write("ws_upgrade", "query", upgrade(path=b"/sub?x=1&y=%20"))


def jwt(header, claims, secret=b"fuzz-secret-of-at-least-32-bytes!"):
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    msg = b64(header) + b"." + b64(claims)
    return msg + b"." + b64(hmac.new(secret, msg, hashlib.sha256).digest())


def auth_token():
    # Byte 0 even: an op-7 body; odd: JWT header "\n" claims, signed by the target.
    hdr = b'{"alg":"HS256","typ":"JWT"}'
    claims = b'{"sub":"7","exp":4102444800,"iat":1700000000,"plat":"ios","jti":"x"}'
    write("auth_token", "js_client", b"\x00" + TOKEN)
    write("auth_token", "im", b"\x00" + IM_TOKEN)
    write("auth_token", "im_signed", b"\x00" + IM_TOKEN.replace(b"a.b.c", jwt(hdr, claims)))
    write("auth_token", "case_insensitive", b"\x00" + b'{"MID":5,"Key":"k","Room_ID":"a://b","x":[1],"accepts":null}')
    write("auth_token", "wrong_types", b"\x00" + b'{"mid":"1","accepts":[1.5]}')
    write("auth_token", "not_object", b"\x00" + b"[1]")
    write("auth_token", "claims", b"\x01" + hdr + b"\n" + claims)
    write("auth_token", "claims_default_header", b"\x01" + claims)
    write("auth_token", "claims_expired", b"\x01" + hdr + b"\n" + b'{"sub":"1","exp":1}')
    write("auth_token", "claims_nbf", b"\x01" + hdr + b"\n" + b'{"sub":"1","exp":4102444800,"nbf":4102444000}')
    write("auth_token", "alg_none", b"\x01" + b'{"alg":"none"}\n' + claims)
    write("auth_token", "claims_wrong_types", b"\x01" + hdr + b"\n" + b'{"sub":7,"exp":"soon"}')


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb(fields):
    """fields: (number, value) with int -> varint, bytes/str -> length-delimited."""
    out = bytearray()
    for num, v in fields:
        if isinstance(v, bool) or isinstance(v, int):
            out += varint(num << 3) + varint(int(v))
        else:
            v = v.encode() if isinstance(v, str) else v
            out += varint(num << 3 | 2) + varint(len(v)) + v
    return bytes(out)


def conv(c):
    kinds = {"P2P": 1, "GROUP": 2}
    return pb([(1, kinds.get(c.get("kind"), 0)), (2, int(c.get("id", 0)))])


def im_bodies():
    # Byte 0: bit 0 JSON, bits 1-3 the op (send, sync, pull, recall, read, recv, typing, members).
    ops = {"20_send_req": 0, "22_sync_req": 1, "24_pull_req": 2, "26_recall_req": 3,
           "28_mark_req": 4, "32_typing_req": 6, "34_members_req": 7}
    for name, op in ops.items():
        with open(os.path.join(GOLDEN, name + ".json"), "rb") as f:
            body = f.read()
        j = json.loads(body)
        write("im_bodies", name + ".json", bytes([op << 1 | 1]) + body)
        write("im_bodies", name + ".compact.json", bytes([op << 1 | 1]) + json.dumps(j, separators=(",", ":")).encode())
        if name == "20_send_req":
            msg = pb([(1, j["clientMsgId"]), (2, conv(j["conv"])), (3, j["contentType"]), (4, j["content"]),
                      (5, b"".join(varint(int(m)) for m in j["mentions"])), (6, int(j["refSeq"]))])
        elif name == "22_sync_req":
            msg = pb([(1, int(j.get("since", 0))), (2, j.get("cursor", "")), (3, j.get("limit", 0)), (4, int(j.get("epoch", 0)))])
        elif name == "24_pull_req":
            dirs = {"FORWARD": 1, "BACKWARD": 2}
            msg = pb([(1, conv(j["conv"])), (2, dirs.get(j.get("dir"), 0)), (3, int(j.get("fromSeq", 0))), (4, j.get("limit", 0))])
        elif name == "26_recall_req":
            msg = pb([(1, conv(j["conv"])), (2, int(j.get("seq", 0))), (3, j.get("clientMsgId", ""))])
        elif name == "28_mark_req":
            msg = pb([(1, conv(j["conv"])), (2, int(j.get("seq", 0)))])
        elif name == "32_typing_req":
            msg = pb([(1, conv(j["conv"])), (2, bool(j.get("typing", False)))])
        else:
            msg = pb([(1, int(j.get("gid", 0))), (2, j.get("cursor", "")), (3, j.get("limit", 0))])
        write("im_bodies", name + ".pb", bytes([op << 1]) + msg)
    write("im_bodies", "mark_recv.pb", bytes([5 << 1]) + pb([(1, conv({"kind": "GROUP", "id": 9})), (2, 12)]))
    write("im_bodies", "empty.json", b"\x01")
    write("im_bodies", "empty.pb", b"\x00")
    write("im_bodies", "unknown_enum.json", b"\x09" + b'{"conv":{"kind":"NOPE","id":"1"},"seq":"3"}')
    write("im_bodies", "unknown_field.pb", b"\x08" + pb([(9, 5), (1, conv({"kind": "P2P", "id": 2})), (2, 3)]))
    write("im_bodies", "numbers_as_numbers.json", b"\x09" + b'{"conv":{"kind":1,"id":2},"seq":3}')


packet_stream()
raw_batch()
ws_frames()
ws_upgrade()
auth_token()
im_bodies()
