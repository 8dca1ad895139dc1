# Steps of the controller's libzmq build (cmake/controller_libzmq.cmake), run with cmake -P:
#   -DSTEP=patch   -DDIR=<source> -DCHUNK=N   sets message_pipe_granularity to N frames
#   -DSTEP=check   -DDIR=<build>              CURVE on libsodium, nothing else
#   -DSTEP=install -DDIR=<build> -DOUT=<dir>  OUT/libzmq.so.5, the file itself
if(STEP STREQUAL "patch")
  file(READ ${DIR}/src/config.hpp text)
  # Only the one constant, and only where it reads as libzmq 4.3.x has it.
  string(REGEX MATCHALL "message_pipe_granularity = 256," found "${text}")
  list(LENGTH found n)
  if(NOT n EQUAL 1)
    message(FATAL_ERROR "${DIR}/src/config.hpp does not set 'message_pipe_granularity = 256,' once, as libzmq 4.3.x does; "
            "a libzmq5 of another shape needs cmake/controller_libzmq.cmake looked at again "
            "(-DCAIRN_CONTROLLER_LIBZMQ_PIPE_CHUNK=0 builds the controller on Debian's libzmq5 meanwhile)")
  endif()
  string(REPLACE "message_pipe_granularity = 256," "message_pipe_granularity = ${CHUNK}," text "${text}")
  file(WRITE ${DIR}/src/config.hpp "${text}")
elseif(STEP STREQUAL "check")
  file(READ ${DIR}/platform.hpp p)
  if(NOT p MATCHES "#define ZMQ_USE_LIBSODIUM" OR NOT p MATCHES "#define ZMQ_HAVE_CURVE" OR p MATCHES "#define ZMQ_USE_TWEETNACL")
    message(FATAL_ERROR "the controller's libzmq would not have CURVE on libsodium (${DIR}/platform.hpp): "
            "is libsodium-dev installed? (scripts/install-deps.sh installs it)")
  endif()
elseif(STEP STREQUAL "install")
  file(MAKE_DIRECTORY ${OUT})
  file(REAL_PATH ${DIR}/lib/libzmq.so.5 real)
  file(COPY_FILE ${real} ${OUT}/libzmq.so.5.tmp)
  file(RENAME ${OUT}/libzmq.so.5.tmp ${OUT}/libzmq.so.5)
else()
  message(FATAL_ERROR "controller_libzmq_step.cmake: unknown STEP '${STEP}'")
endif()
