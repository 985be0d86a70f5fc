/*
 * cluster_lua.c - the server-side Lua scripts: each runs atomically in
 * Redis, so a message gets its seq, joins the history and the dedup hash,
 * and is published in one step.
 */
#include "cluster_impl.h"

/* KEYS seq epoch hist dedup dedupq [convs-of-a convs-of-b]; ARGV room from
 * id body ts histmax dedupmax channel epoch-candidate kind target.
 * -> {stored?, seq, epoch}
 * The two convs keys are given for a DM conversation "@a:b": each user's
 * index of conversations (sorted set, score = last activity in ms), so that
 * any node can list them (cl_lua_convs); the newest CL_CONVS_MAX are kept.
 * kind (enum hub_kind) > 0: an edit, delete or react about target; a
 * delete (2) also blanks the text of target and its edits (kind 1) in the
 * history list (at most histmax entries, decoded once per deletion). */
const char cl_lua_send[] =
	"local epoch = redis.call('GET', KEYS[2])\n"
	"if not epoch then epoch = ARGV[9]; redis.call('SET', KEYS[2], epoch) end\n"
	"local dk = ARGV[2] .. '\\31' .. ARGV[3]\n"
	"local d = redis.call('HGET', KEYS[4], dk)\n"
	"if d then return {0, tonumber(d), epoch} end\n"
	"local seq = redis.call('INCR', KEYS[1])\n"
	"local e = {t='m', room=ARGV[1], seq=seq, from=ARGV[2], id=ARGV[3],"
	" body=ARGV[4], ts=tonumber(ARGV[5]), epoch=epoch}\n"
	"local kind = tonumber(ARGV[10]) or 0\n"
	"local target = tonumber(ARGV[11]) or 0\n"
	"if kind > 0 then e.kind = kind; e.target = target end\n"
	"if kind == 2 then\n"
	"  for i, x in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do\n"
	"    local h = cjson.decode(x)\n"
	"    if h.seq == target or (h.kind == 1 and h.target == target) then\n"
	"      h.body = ''; h.deleted = true; redis.call('LSET', KEYS[3], i - 1, cjson.encode(h))\n"
	"    end\n"
	"  end\n"
	"end\n"
	"local m = cjson.encode(e)\n"
	"local hmax = tonumber(ARGV[6])\n"
	"if hmax > 0 then redis.call('RPUSH', KEYS[3], m); redis.call('LTRIM', KEYS[3], -hmax, -1) end\n"
	"local dmax = tonumber(ARGV[7])\n"
	"if dmax > 0 then\n"
	"  redis.call('HSET', KEYS[4], dk, seq); redis.call('RPUSH', KEYS[5], dk)\n"
	"  while redis.call('LLEN', KEYS[5]) > dmax do redis.call('HDEL', KEYS[4], redis.call('LPOP', KEYS[5])) end\n"
	"end\n"
	"if KEYS[7] then\n"
	"  for i = 6, 7 do\n"
	"    redis.call('ZADD', KEYS[i], tonumber(ARGV[5]), ARGV[1])\n"
	"    redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -" CL_CONVS_MAX_STR " - 1)\n"
	"  end\n"
	"end\n"
	"redis.call('PUBLISH', ARGV[8], m)\n"
	"return {1, seq, epoch}\n";

/* KEYS convs; ARGV prefix name max -> {room, seq, read, room, seq, read,
 * ...}: name's conversations, the most recently active first, each with
 * its latest seq and name's read marker. The room keys are built here from
 * the prefix (one standalone Redis holds them all). */
const char cl_lua_convs[] =
	"local out = {}\n"
	"for _, r in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)) do\n"
	"  local base = ARGV[1] .. 'room:' .. r .. ':'\n"
	"  out[#out + 1] = r\n"
	"  out[#out + 1] = redis.call('GET', base .. 'seq') or '0'\n"
	"  out[#out + 1] = redis.call('HGET', base .. 'reads', ARGV[2]) or '0'\n"
	"end\n"
	"return out\n";

/* KEYS seq epoch hist members state reads; ARGV epoch-candidate
 * -> {seq, epoch, hist, members, state, reads} (state: the room's roles,
 * bans, mutes, invites and settings, as field/value pairs; reads: the read
 * markers, name/seq pairs) */
const char cl_lua_load[] =
	"local epoch = redis.call('GET', KEYS[2])\n"
	"if not epoch then epoch = ARGV[1]; redis.call('SET', KEYS[2], epoch) end\n"
	"return {tonumber(redis.call('GET', KEYS[1]) or '0'), epoch,"
	" redis.call('LRANGE', KEYS[3], 0, -1), redis.call('HGETALL', KEYS[4]),"
	" redis.call('HGETALL', KEYS[5]), redis.call('HGETALL', KEYS[6])}\n";

/* KEYS hist; ARGV seq -> 1 if message seq's body was emptied, 0 if not in
 * the capped history. The list holds consecutive seqs: one index lookup. */
const char cl_lua_erase[] =
	"local first = redis.call('LINDEX', KEYS[1], 0)\n"
	"if not first then return 0 end\n"
	"local i = tonumber(ARGV[1]) - cjson.decode(first).seq\n"
	"if i < 0 then return 0 end\n"
	"local raw = redis.call('LINDEX', KEYS[1], i)\n"
	"if not raw then return 0 end\n"
	"local m = cjson.decode(raw)\n"
	"if m.seq ~= tonumber(ARGV[1]) or m.from == '!mod' then return 0 end\n"
	"m.body = ''\n"
	"redis.call('LSET', KEYS[1], i, cjson.encode(m))\n"
	"return 1\n";

/* KEYS hash [set-or-online]; ARGV field delta member channel event kind
 * kind "p": KEYS[2] is the node's room set (member = room);
 * kind "u": KEYS[2] is the online hash (name -> sessions on all nodes). */
const char cl_lua_delta[] =
	"local d = tonumber(ARGV[2])\n"
	"local n = redis.call('HINCRBY', KEYS[1], ARGV[1], d)\n"
	"if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end\n"
	"if ARGV[6] == 'p' then\n"
	"  if d > 0 then redis.call('SADD', KEYS[2], ARGV[3]) end\n"
	"else\n"
	"  local t = redis.call('HINCRBY', KEYS[2], ARGV[3], d)\n"
	"  if t <= 0 then redis.call('HDEL', KEYS[2], ARGV[3]) end\n"
	"end\n"
	"redis.call('PUBLISH', ARGV[4], ARGV[5])\n"
	"return n\n";

/* KEYS online; ARGV name channel event -> 1 published, 0 nobody online */
const char cl_lua_dm[] =
	"if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') > 0 then\n"
	"  redis.call('PUBLISH', ARGV[2], ARGV[3]); return 1\n"
	"end\n"
	"return 0\n";

/* KEYS node-rooms users node-key online; ARGV node prefix channel event */
const char cl_lua_cleanup[] =
	"local pre = ARGV[1] .. '\\31'\n"
	"for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
	"  local key = ARGV[2] .. 'room:' .. room .. ':members'\n"
	"  for _, f in ipairs(redis.call('HKEYS', key)) do\n"
	"    if string.sub(f, 1, #pre) == pre then redis.call('HDEL', key, f) end\n"
	"  end\n"
	"end\n"
	"redis.call('DEL', KEYS[1])\n"
	"for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do\n"
	"  if string.sub(f, 1, #pre) == pre then\n"
	"    local name = string.sub(f, #pre + 1)\n"
	"    local n = tonumber(redis.call('HGET', KEYS[2], f) or '0')\n"
	"    if redis.call('HINCRBY', KEYS[4], name, -n) <= 0 then redis.call('HDEL', KEYS[4], name) end\n"
	"    redis.call('HDEL', KEYS[2], f)\n"
	"  end\n"
	"end\n"
	"redis.call('DEL', KEYS[3])\n"
	"redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
	"return 1\n";
