# The controller's libzmq: Debian's own libzmq source, of the libzmq5 version
# installed here (fetched by scripts/fetch-libzmq-source.sh, hashes checked
# against Debian's signed Sources index, Debian's patches applied), built with
# one compile-time constant changed: message_pipe_granularity, the frames in
# each chunk of a connection's pipes. Debian's 256 (16 KB chunks, each
# direction keeping its chunk and a spare) holds ~97 KB a long-lived CURVE
# connection in libzmq alone, over the controller's memory target at 1,000
# agents; 32 holds ~35 KB (docs/scaling.md § The controller's libzmq,
# docs/benchmarks.md). Only cairn-controller loads it (RUNPATH): agents,
# cairnctl and the tests' own sockets use Debian's libzmq5. The ABI is
# Debian's, so the controller links against Debian's libzmq.so and loads this
# one at run time.
#
#   -DCAIRN_CONTROLLER_LIBZMQ_PIPE_CHUNK=32   (default) frames a pipe chunk
#   -DCAIRN_CONTROLLER_LIBZMQ_PIPE_CHUNK=0    the controller loads Debian's libzmq5 as it is
#
# Defines, for the controller's code: CAIRN_CONTROLLER_LIBZMQ_CHUNK (0 when
# none is built) and CAIRN_CONTROLLER_LIBZMQ_FROM ("zeromq3 4.3.4-6").
set(CAIRN_CONTROLLER_LIBZMQ_PIPE_CHUNK 32 CACHE STRING
    "frames in a pipe chunk of the controller's own libzmq (Debian's source); 0: the controller loads Debian's libzmq5")
set(CAIRN_LIBZMQ_CACHE /var/cache/cairn/libzmq CACHE PATH "where scripts/fetch-libzmq-source.sh keeps Debian's libzmq source")

set(CAIRN_CONTROLLER_LIBZMQ_BUILT OFF)
# The build tree has the installed layout, bin/../lib/cairn (the controller is
# build/controller/cairn-controller), so one RUNPATH, $ORIGIN/../lib/cairn,
# serves both and nothing rewrites it at install: CMake's rewritable build
# RUNPATH ends in an empty entry, which the loader reads as the working directory.
set(CAIRN_CONTROLLER_LIBZMQ_DIR ${CMAKE_BINARY_DIR}/lib/cairn)
set(CAIRN_CONTROLLER_LIBZMQ_FROM "")

function(cairn_controller_libzmq_setup)
  set(chunk ${CAIRN_CONTROLLER_LIBZMQ_PIPE_CHUNK})
  if(NOT chunk MATCHES "^[0-9]+$")
    message(FATAL_ERROR "CAIRN_CONTROLLER_LIBZMQ_PIPE_CHUNK wants a number of frames (0: Debian's libzmq5), got '${chunk}'")
  endif()
  if(chunk EQUAL 0)
    message(STATUS "controller libzmq: Debian's libzmq5 (CAIRN_CONTROLLER_LIBZMQ_PIPE_CHUNK=0)")
    return()
  endif()
  if(chunk LESS 2 OR chunk GREATER 256)
    message(FATAL_ERROR "CAIRN_CONTROLLER_LIBZMQ_PIPE_CHUNK: between 2 and 256 frames (Debian's is 256), got ${chunk}")
  endif()
  execute_process(COMMAND dpkg-query -W -f=\${source:Package}\ \${source:Version} libzmq5
                  OUTPUT_VARIABLE from RESULT_VARIABLE rc ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0 OR NOT from MATCHES "^[^ ]+ [^ ]+$")
    message(WARNING "controller libzmq: Debian's libzmq5 is not installed as a package here, so the controller loads the "
            "system's libzmq as it is (~97 KB a long-lived agent connection instead of ~35 KB; docs/scaling.md)")
    return()
  endif()
  string(REPLACE " " ";" parts "${from}")
  list(GET parts 1 version)
  set(src ${CAIRN_LIBZMQ_CACHE}/${version}/src)
  # A libzmq5 upgrade (a security update) configures again, and builds from its source.
  file(GLOB dpkg_lists /var/lib/dpkg/info/libzmq5:*.list /var/lib/dpkg/info/libzmq5.list)
  set_property(DIRECTORY ${CMAKE_SOURCE_DIR} APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${dpkg_lists})
  if(NOT EXISTS ${src}/.debian-version)
    message(WARNING "controller libzmq: Debian's ${from} source is not in ${CAIRN_LIBZMQ_CACHE}/${version} "
            "(bash scripts/fetch-libzmq-source.sh fetches it; scripts/install-deps.sh runs it), so the controller loads "
            "Debian's libzmq5 as it is: ~97 KB a long-lived agent connection instead of ~35 KB (docs/scaling.md)")
    return()
  endif()

  # The flags Debian builds its packages with (hardening included).
  foreach(v CFLAGS CXXFLAGS CPPFLAGS LDFLAGS)
    execute_process(COMMAND dpkg-buildflags --get ${v} OUTPUT_VARIABLE deb_${v} OUTPUT_STRIP_TRAILING_WHITESPACE
                    WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
  endforeach()
  set(dir ${CAIRN_CONTROLLER_LIBZMQ_DIR})
  include(ExternalProject)
  ExternalProject_Add(libzmq_controller
    # A tree per version and chunk size: a libzmq5 upgrade, or another
    # chunk, builds afresh instead of reusing steps made from the old source.
    PREFIX ${CMAKE_BINARY_DIR}/libzmq-controller/${version}-${chunk}
    DOWNLOAD_COMMAND ${CMAKE_COMMAND} -E rm -rf <SOURCE_DIR>
             COMMAND ${CMAKE_COMMAND} -E copy_directory ${src} <SOURCE_DIR>
    PATCH_COMMAND ${CMAKE_COMMAND} -DSTEP=patch -DDIR=<SOURCE_DIR> -DCHUNK=${chunk}
                  -P ${CMAKE_SOURCE_DIR}/cmake/controller_libzmq_step.cmake
    CMAKE_ARGS -DCMAKE_BUILD_TYPE=None
               -DCMAKE_C_COMPILER=${CMAKE_C_COMPILER} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
               -DCMAKE_C_COMPILER_LAUNCHER=${CMAKE_C_COMPILER_LAUNCHER}
               -DCMAKE_CXX_COMPILER_LAUNCHER=${CMAKE_CXX_COMPILER_LAUNCHER}
               "-DCMAKE_C_FLAGS=${deb_CFLAGS} ${deb_CPPFLAGS}" "-DCMAKE_CXX_FLAGS=${deb_CXXFLAGS} ${deb_CPPFLAGS}"
               "-DCMAKE_SHARED_LINKER_FLAGS=${deb_LDFLAGS} -Wl,-z,now"
               -DWITH_LIBSODIUM=ON -DENABLE_CURVE=ON -DENABLE_DRAFTS=OFF -DWITH_OPENPGM=OFF -DWITH_NORM=OFF
               -DWITH_VMCI=OFF -DBUILD_SHARED=ON -DBUILD_STATIC=OFF -DBUILD_TESTS=OFF -DWITH_DOCS=OFF
               -DWITH_PERF_TOOL=OFF -DENABLE_PRECOMPILED=OFF -DENABLE_CPACK=OFF
    BUILD_COMMAND ${CMAKE_COMMAND} --build <BINARY_DIR> --target libzmq
    INSTALL_COMMAND ${CMAKE_COMMAND} -DSTEP=install -DDIR=<BINARY_DIR> -DOUT=${dir}
                    -P ${CMAKE_SOURCE_DIR}/cmake/controller_libzmq_step.cmake
    BUILD_BYPRODUCTS ${dir}/libzmq.so.5
    LOG_CONFIGURE ON LOG_BUILD ON LOG_OUTPUT_ON_FAILURE ON
  )
  # Built with CURVE on libsodium, never tweetnacl nor without CURVE: checked after libzmq's configure.
  ExternalProject_Add_Step(libzmq_controller check
    DEPENDEES configure DEPENDERS build
    COMMAND ${CMAKE_COMMAND} -DSTEP=check -DDIR=<BINARY_DIR> -P ${CMAKE_SOURCE_DIR}/cmake/controller_libzmq_step.cmake)
  message(STATUS "controller libzmq: Debian's ${from} source with ${chunk}-frame pipe chunks, into ${dir}")
  set(CAIRN_CONTROLLER_LIBZMQ_BUILT ON PARENT_SCOPE)
  set(CAIRN_CONTROLLER_LIBZMQ_FROM "${from}" PARENT_SCOPE)
endfunction()
cairn_controller_libzmq_setup()

# cairn-controller (the daemon) loads the libzmq built above; the .deb puts it in /usr/lib/cairn.
function(cairn_use_controller_libzmq target)
  if(CAIRN_CONTROLLER_LIBZMQ_BUILT)
    add_dependencies(${target} libzmq_controller)
    get_target_property(bin_dir ${target} RUNTIME_OUTPUT_DIRECTORY)
    if(bin_dir)
      message(FATAL_ERROR "cairn_use_controller_libzmq: ${target} must stay in its directory's binary dir")
    endif()
    # /usr/lib/cairn after $ORIGIN: the loader reads $ORIGIN of an executable
    # from /proc/self/exe, which a chroot without /proc does not have.
    set_target_properties(${target} PROPERTIES BUILD_WITH_INSTALL_RPATH ON
                                               INSTALL_RPATH "\$ORIGIN/../lib/cairn:/usr/lib/cairn")
    target_compile_definitions(${target} PRIVATE CAIRN_CONTROLLER_LIBZMQ_CHUNK=${CAIRN_CONTROLLER_LIBZMQ_PIPE_CHUNK}
      "CAIRN_CONTROLLER_LIBZMQ_FROM=\"${CAIRN_CONTROLLER_LIBZMQ_FROM}\"")
    install(FILES ${CAIRN_CONTROLLER_LIBZMQ_DIR}/libzmq.so.5 DESTINATION lib/cairn COMPONENT controller)
  else()
    target_compile_definitions(${target} PRIVATE CAIRN_CONTROLLER_LIBZMQ_CHUNK=0)
  endif()
endfunction()
